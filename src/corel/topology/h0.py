"""Exact, differentiable 0-dim Vietoris-Rips persistence of point clouds and distance matrices.

The death times are the edge lengths of a minimum spanning tree of the complete graph (the
filtration value of an edge is the full pairwise distance, not half of it).  Edges are ordered by
(length, smaller index, larger index), which makes the tree unique; an engine finds it without
autograd: the compiled Prim (``backend="native"``, on the host: CPU tensors directly, others
through one small copy each way) or Borůvka in torch operations on the tensors' own device
(``backend="torch"``, :mod:`corel.topology.boruvka`), or Triton kernels on a GPU
(``backend="triton"``, :mod:`corel.topology.fused`: Prim fused into one kernel for small clouds,
Borůvka reading kernel-computed rows for larger ones).  All give the same tree.  The death times
are then the distances at the tree's edges, recomputed with autograd, so ``d(death)/d(points)`` is
exact wherever the tree is unique.

Clouds are scaled by a power of two before the tree is chosen (exact in floating point), so huge
or tiny coordinates neither overflow nor underflow inside the engines; float16 and bfloat16
clouds are handled in float32 and their death times returned in their own dtype.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import shutil

import torch
from torch import Tensor

from corel._native._kernels import mst_edges
from corel.topology.boruvka import edge_keys, minimum_spanning_tree
from corel.topology.diagram import H0
from corel.topology.distances import (
    Metric,
    check_distance_matrix,
    check_finite,
    check_points,
    lengths_of,
    measured_in,
    metric_order,
    power_of_two_scale,
    traced,
)

BACKENDS = ("auto", "native", "torch", "triton")
# Whether backend "triton" can run (looked up once, without importing it: torch.compile then reads a constant).
_HAS_TRITON = importlib.util.find_spec("triton") is not None


def _known(backend: str) -> None:
    """ValueError unless ``backend`` is one of BACKENDS, with its package installed."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if backend == "triton" and not _HAS_TRITON:
        raise ValueError("backend 'triton' needs the triton package (pip install triton)")


def check_backend(backend: str) -> None:
    """ValueError naming the problem when H0 engine ``backend`` is unknown or cannot run on this
    machine ("triton": the package and a CUDA device); for callers that start long work with it."""
    _known(backend)
    if backend == "triton":
        from corel.topology.fused import check_device  # imports triton, which only this backend needs

        check_device()


@functools.cache
def _triton_runs_on(device: torch.device) -> bool:
    """Whether "auto" takes the Triton kernels on CUDA ``device``: the package, compiled (not its
    interpreter), a C compiler (Triton builds its launcher with one), NVIDIA (the kernels' squares
    are PTX) and compute capability 8.0 or later (their machine code checked: sm_80 and sm_90)."""
    compiler = os.environ.get("CC") or any(shutil.which(cc) for cc in ("cc", "gcc", "clang"))
    if not (_HAS_TRITON and compiler and torch.version.hip is None
            and torch.cuda.get_device_capability(device) >= (8, 0)):
        return False
    from corel.topology.fused import INTERPRETED  # imports triton, which "auto" then uses

    return not INTERPRETED


def _engine(data: Tensor, backend: str) -> str:
    """"native", "torch" or "triton": "auto" is the compiled kernel on CPU, the Triton kernels on
    NVIDIA GPUs where they run (on an H100 2x faster than Borůvka for the loss, up to 15x for one l1
    cloud, as fast in l2: docs/persistence.md), and Borůvka on other devices and where ``data`` is
    traced (:func:`~corel.topology.distances.traced`)."""
    _known(backend)
    if backend == "auto":
        if traced(data):
            return "torch"
        if data.device.type == "cpu":
            return "native"
        return "triton" if data.device.type == "cuda" and _triton_runs_on(data.device) else "torch"
    if backend == "native" and torch._C._functorch.is_functorch_wrapped_tensor(data):
        raise ValueError("backend 'native' cannot run under torch.func transforms; use 'auto' or 'torch'")
    return backend


def _tree(data: Tensor, p: float | None, engine: str) -> Tensor:
    """Edges (B, n-1, 2) of the trees of finite ``data`` (B, n, d) points or (B, n, n) distances
    (``p`` None), in (length, i, j) order, on ``data``'s device."""
    if engine == "native":
        return mst_edges(data, p).to(data.device)
    if engine == "triton":
        # imports triton, which only this backend needs
        from corel.topology.fused import minimum_spanning_tree as fused_tree

        return fused_tree(data, p)
    return minimum_spanning_tree(data, p)


def _ordered(deaths: Tensor, edges: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Sorts (B, k) deaths and (B, k, 2) edges by (death, i, j), in one sort of packed keys where
    they fit (:func:`~corel.topology.boruvka.edge_keys`).  The engines order by the values they
    compare: squared sums for l2 (distinct ones can share a root), lengths in another rounding
    for another p, and a cast to float16 or bfloat16 can tie distinct deaths."""
    eid = edges[..., 0] * n + edges[..., 1]
    values = deaths.detach()
    if values.dtype not in (torch.float32, torch.float64):
        values = values.float()  # exact: equal deaths stay equal, and float32 keys pack into one sort
    keys_of = edge_keys(values.dtype, n)
    order = keys_of.order(keys_of.of(values + 0.0, eid))  # + 0.0: a -0.0 death (from a matrix) ties with 0.0
    return deaths.gather(-1, order), edges.gather(-2, order[..., None].expand(*order.shape, 2))


def _check_overflow(deaths: Tensor, largest: float, d: int, dtype: torch.dtype) -> None:
    """A distance between coordinates of at most ``largest`` is at most 2 * largest * d: only when
    that can exceed ``dtype``'s range are the death times checked (one more synchronisation)."""
    if 2 * largest * d >= torch.finfo(dtype).max and not torch.isfinite(deaths).all():
        raise ValueError(f"distance overflow: the points' distances exceed the largest {dtype} "
                         f"({torch.finfo(dtype).max:.3g}); rescale the points or use a wider dtype")


def _empty(data: Tensor) -> H0:
    """The diagrams of clouds of one point, or of an empty batch, of ``data`` (..., n, d or n):
    (..., n-1) deaths without work, still attached to ``data``'s graph (zero gradients)."""
    n = data.shape[-2]
    deaths = data.flatten(-2)[..., : n - 1] * 0
    return H0(deaths, torch.zeros(*deaths.shape, 2, dtype=torch.long, device=data.device))


def h0_persistence(points: Tensor, metric: Metric = "l1", *, backend: str = "auto", check: bool = True) -> H0:
    """Exact 0-dim Vietoris-Rips persistence of clouds ``points`` (..., n, d).

    Returns :class:`H0` with the n-1 death times (ascending, in the units of the metric, in the
    points' dtype) and their edges, ties in ascending (i, j) order.  All leading dimensions are
    clouds computed in one call.  Duplicate points give death times of exactly 0, which are kept.
    ``backend``: "auto" (the compiled kernel on CPU, "triton" on NVIDIA GPUs where it runs,
    Borůvka elsewhere), "native", "torch" or "triton" (on a GPU: one fused kernel for clouds of
    up to 1,024 points with n^2 d <= 2^25 under l1, l2 or linf; beyond, Borůvka on kernel-computed
    rows for l1 and l2, plain Borůvka otherwise); all return the same tree.  On CPU the native
    kernel never builds the n x n matrix (memory O(n d)); Borůvka keeps one matrix only while it
    fits and otherwise scans rows in tiles, so 100,000 points of dimension 160 fit.

    ``check=False`` leaves out the checks that read a value back from the device (one host
    synchronisation per call): a cloud with NaN or inf coordinates then gets NaN deaths, and
    distances beyond the dtype inf deaths, instead of a ValueError.  For training loops that look
    at the loss once per epoch; inside ``torch.compile`` and ``torch.func`` transforms (where
    "auto" is Borůvka) the checks are always left out.
    """
    check_points(points, check_values=False)
    p = metric_order(metric)
    engine = _engine(points, backend)
    *batch, n, d = points.shape
    # Under torch.compile and torch.func the checks that need the host are left out too, so the
    # fixed rounds trace into one graph.
    checked = check and not traced(points)
    if n == 1 or points.numel() == 0:
        if checked:
            check_finite(points, "points")
        return _empty(points)
    # contiguous: the loss passes its branches as a strided view, where the reductions below ran
    # 10x slower on CPU (amax 48 vs 4.6 us at 16 x 100 x 10); a no-op for contiguous points
    work = measured_in(points.reshape(-1, n, d)).contiguous()
    scale, top = power_of_two_scale(work)
    if checked:
        largest = float(top.max())  # the one host synchronisation: validity and overflow in one number
        if not largest < math.inf:  # NaN or inf
            check_finite(points, "points")
    with torch.no_grad():
        scaled = work / scale
        select = scaled
        if not checked:  # a cloud with NaN or inf selects on zeros; its deaths become NaN below
            finite = torch.isfinite(top)[:, None]
            select = torch.where(finite[..., None], select, 0.0)
        edges = _tree(select, p, engine)
    deaths = lengths_of(work, edges, p, (scaled, scale))
    if deaths.dtype != points.dtype:
        deaths = deaths.to(points.dtype)
    if checked:
        _check_overflow(deaths, largest, d, points.dtype)
    else:  # overflowing distances come out as inf deaths by themselves
        deaths = torch.where(finite, deaths, math.nan)
    deaths, edges = _ordered(deaths, edges, n)
    return H0(deaths.reshape(*batch, n - 1), edges.reshape(*batch, n - 1, 2))


def h0_persistence_from_distances(dist: Tensor, *, backend: str = "auto") -> H0:
    """Exact 0-dim persistence from symmetric distance matrices ``dist`` (..., n, n).

    Death times are gathered from ``dist`` at the tree's edges, so gradients flow into ``dist``.
    """
    check_distance_matrix(dist)
    engine = _engine(dist, backend)
    *batch, n, _ = dist.shape
    if n == 1 or dist.numel() == 0:
        return _empty(dist)
    flat = dist.reshape(-1, n, n)
    with torch.no_grad():
        # + 0.0 turns -0.0 into 0.0: the engines order lengths by their bits, where -0.0 would come first
        edges = _tree(measured_in(flat.detach()) + 0.0, None, engine)
    deaths = flat[torch.arange(flat.shape[0], device=dist.device)[:, None], edges[..., 0], edges[..., 1]]
    deaths, edges = _ordered(deaths, edges, n)
    return H0(deaths.reshape(*batch, n - 1), edges.reshape(*batch, n - 1, 2))
