"""The Triton kernels (backend "triton") beyond the engine comparisons of test_h0: distance
matrices, the loss's gradients, the pairwise kernel and Borůvka on it, the clouds left to plain
Borůvka, and the errors.  Without a GPU they run in Triton's interpreter (conftest sets
TRITON_INTERPRET=1)."""

import math

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

from corel import ConnectivityLoss, h0_persistence, h0_persistence_from_distances  # noqa: E402
from corel.topology import boruvka, fused, h0  # noqa: E402
from corel.topology.distances import fixed_order_pairwise  # noqa: E402


def test_distance_matrices_give_the_native_tree(rng):
    pts = rng.integers(0, 4, size=(3, 40, 3)).astype(float)
    grid = torch.from_numpy(np.abs(pts[:, :, None] - pts[:, None]).sum(-1))  # many exact ties
    noise = torch.from_numpy(rng.random((2, 30, 30)))
    for matrix in (grid, grid.float(), noise + noise.mT):  # the last one is not a metric
        native, fused = (h0_persistence_from_distances(matrix, backend=b) for b in ("native", "triton"))
        assert torch.equal(native.edges, fused.edges) and torch.equal(native.deaths, fused.deaths)


def test_loss_gradients_equal_the_native_engine(rng):
    z = torch.from_numpy(rng.normal(size=(60, 4 * 10))).float()
    grads = []
    for backend in ("native", "triton"):
        leaf = z.clone().requires_grad_()
        ConnectivityLoss(eta=2.0, branches=4, backend=backend)(leaf).backward()
        grads.append(leaf.grad)
    assert torch.equal(*grads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [1.0, 2.0])
def test_pairwise_values_equal_the_fixed_order_sums(rng, dtype, p):
    """Tiles cut through both sides (m, n not multiples of 32) and d not a multiple of 8."""
    for shape_a, shape_b in (((37, 13), (70, 13)), ((2, 33, 21), (2, 5, 21)), ((1, 3, 8), (1, 40, 8))):
        a = torch.from_numpy(rng.normal(size=shape_a) * 1e-3 + 100).to(dtype)  # clustered: rounding matters
        b = torch.from_numpy(rng.normal(size=shape_b) * 1e-3 + 100).to(dtype)
        assert torch.equal(fused.pairwise_values(a, b, p), fixed_order_pairwise(a, b, p))


@pytest.mark.parametrize("schedule", ["fixed rounds", "neighbour lists"])
@pytest.mark.parametrize("metric", ["l1", "l2"])
def test_boruvka_on_the_pairwise_kernel_gives_the_native_tree(rng, monkeypatch, schedule, metric):
    monkeypatch.setattr(fused, "FUSED_MAX_POINTS", 0)  # every cloud past the fused Prim
    monkeypatch.setattr(boruvka, "LIST_MIN_POINTS", 0 if schedule == "neighbour lists" else 1 << 20)
    monkeypatch.setattr(boruvka, "LIST_LENGTH", 3)  # lists that run out: rescans and whole rows
    clouds = [rng.normal(size=(2, 70, 20)), np.repeat(rng.normal(size=(1, 15, 20)), 4, axis=1),
              rng.integers(0, 3, size=(1, 60, 3)).astype(float),
              np.concatenate([rng.normal(size=(1, 30, 40)) * 1e-3 + 100, rng.normal(size=(1, 30, 40)) * 1e-3 - 100], 1)]
    for cloud in clouds:
        for dtype in (torch.float32, torch.float64):
            x = torch.from_numpy(cloud).to(dtype)
            native, triton = (h0_persistence(x, metric, backend=b) for b in ("native", "triton"))
            assert torch.equal(native.edges, triton.edges) and torch.equal(native.deaths, triton.deaths)


def test_clouds_the_kernels_do_not_take_go_to_plain_boruvka(rng, monkeypatch):
    calls = []
    monkeypatch.setattr(fused, "FUSED_MAX_POINTS", 20)
    original = boruvka.minimum_spanning_tree
    monkeypatch.setattr(boruvka, "minimum_spanning_tree",
                        lambda data, p, pairwise=None: calls.append((p, pairwise)) or original(data, p, pairwise))
    for n, metric in ((21, "l1"), (21, "linf"), (20, 3.0)):  # too many points; a metric with torch's rounding
        x = torch.from_numpy(rng.normal(size=(2, n, 5)))
        triton, native = (h0_persistence(x, metric, backend=b) for b in ("triton", "native"))
        assert torch.equal(triton.edges, native.edges) and torch.equal(triton.deaths, native.deaths)
    assert calls == [(1.0, fused.pairwise_values), (math.inf, None), (3.0, None)]
    assert fused.fits(20, 1.0) and fused.fits(20, None) and not fused.fits(20, 3.0)


def test_two_points_and_one(rng):
    x = torch.tensor([[0.0, 1.0], [3.0, -1.0]])
    assert h0_persistence(x, "l1", backend="triton").deaths.tolist() == [5.0]
    assert h0_persistence(x[:1], "l1", backend="triton").deaths.shape == (0,)


def test_without_a_device_or_the_package_it_says_so(monkeypatch):
    x = torch.randn(5, 2)
    monkeypatch.setattr(fused, "_INTERPRETED", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="needs a CUDA device.*TRITON_INTERPRET=1"):
        h0_persistence(x, backend="triton")
    monkeypatch.setattr(h0.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="needs the triton package"):
        h0_persistence(x, backend="triton")
