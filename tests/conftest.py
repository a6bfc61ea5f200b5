"""Shared fixtures: the metrics every persistence test runs under, the H0 engines, the shared data
folder, an RNG."""

import importlib.metadata
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

# corel's metric and scipy's cdist arguments for the same metric (the oracle's)
METRICS = [("l1", {"metric": "cityblock"}), ("l2", {"metric": "euclidean"}),
           ("linf", {"metric": "chebyshev"}), (3.0, {"metric": "minkowski", "p": 3.0})]

# Without a GPU, Triton's interpreter runs the fused kernel on the CPU (set before it is imported).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _why_no_triton() -> str | None:
    """Why the Triton kernels cannot run here (no package; without a GPU, an interpreter older
    than 3.9, whose API they do not fit: 3.6's fails), or None."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    try:
        version = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:  # the module from another distribution (pytorch-triton)
        import triton

        version = triton.__version__
    if not torch.cuda.is_available() and tuple(map(int, version.split(".")[:2])) < (3, 9):
        return f"without a GPU the kernels need Triton's interpreter from 3.9 on, not {version}"
    return None


NO_TRITON = _why_no_triton()
# Every H0 engine; "triton" where its kernels can run.
ENGINES = ["native", "torch", pytest.param("triton", marks=pytest.mark.skipif(NO_TRITON is not None,
                                                                               reason=str(NO_TRITON)))]

# ../shared/data beside the project (CIFAR-10 as cifar10.npz); tests that need it skip without it
SHARED_DATA = Path(os.environ.get("COREL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def joiner(n: int):
    """Union-find over n vertices: join(i, j) merges their components, False if already one."""
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def join(i: int, j: int) -> bool:
        ri, rj = find(int(i)), find(int(j))
        parent[ri] = rj
        return ri != rj

    return join


def kruskal(dist: np.ndarray) -> list[tuple[int, int]]:
    """The spanning tree of a symmetric (n, n) matrix by Kruskal in (value, i, j) order, the
    definition of corel's tree."""
    n, join = len(dist), joiner(len(dist))
    return [(i, j) for _, i, j in sorted((dist[i, j], i, j) for i in range(n) for j in range(i + 1, n)) if join(i, j)]


def lp_distances(x: np.ndarray, p: float) -> np.ndarray:
    """Oracle: the l_p distance matrix of ``x`` (n, d) in numpy float64, each pair's differences
    divided by their largest first (scipy sums raw p-th powers, which overflow from p = 1024 on
    and underflow for short edges)."""
    v = np.abs(x[:, None, :] - x[None, :, :])
    top = v.max(axis=-1, keepdims=True)
    return np.sum((v / np.where(top > 0, top, 1.0)) ** p, axis=-1) ** (1 / p) * top[..., 0]


def canonical_tree(x: np.ndarray, scipy_metric: dict) -> list[tuple[int, int]]:
    """Oracle: Kruskal over scipy's distances."""
    return kruskal(cdist(x, x, **scipy_metric))


def pytest_configure(config):
    torch.manual_seed(0)
