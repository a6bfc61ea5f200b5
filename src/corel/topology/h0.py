"""Exact, differentiable 0-dim Vietoris-Rips persistence of point clouds and distance matrices.

The death times are the edge lengths of a minimum spanning tree of the complete graph (the
filtration value of an edge is the full pairwise distance, not half of it).  The tree is found
without autograd by an engine: the compiled Prim on CPU (``backend="native"``), a batched torch
algorithm on any device (``backend="torch"``).  The death times are then the distances at the
tree's edges, recomputed with autograd, so ``d(death)/d(points)`` is exact wherever the tree is unique.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from corel._native._kernels import mst_edges
from corel.topology.diagram import H0
from corel.topology.distances import (
    Metric,
    check_distance_matrix,
    check_finite,
    check_points,
    edge_lengths,
    metric_order,
)

# For l2 in high dimension a BLAS distance matrix beats the direct sweep up to a few thousand
# points (measured on 2 cores: n=1000, d=160: 4 ms vs 9 ms); beyond, the O(n^2) matrix costs more.
_MATMUL_MIN_DIM = 64
_MATMUL_MAX_POINTS = 2048


def _native_tree(data: Tensor, p: float | None, what: str) -> Tensor:
    """Compiled Prim on CPU over (B, n, d) points (l_p) or (B, n, n) distances (``p`` None).

    The kernel checks finiteness while it reads the data, which saves a pass over it.
    """
    edges = mst_edges(data, p)
    if edges is None:
        check_finite(data, what)
    return edges


def _prim_torch(dist: Tensor) -> Tensor:
    """Batched Prim in torch ops over distances (B, n, n) -> edges (B, n-1, 2), on their device.

    One step per vertex, each a handful of batched kernels: no host round trip per edge.
    Ties go to the smallest vertex index (argmin returns the first minimum), as in the C kernel.
    """
    b, n, _ = dist.shape
    rows = torch.arange(b, device=dist.device)
    key = dist[:, 0, :].clone()
    parent = torch.zeros(b, n, dtype=torch.long, device=dist.device)
    in_tree = torch.zeros(b, n, dtype=torch.bool, device=dist.device)
    in_tree[:, 0] = True
    edges = torch.empty(b, n - 1, 2, dtype=torch.long, device=dist.device)
    for step in range(n - 1):
        v = key.masked_fill(in_tree, math.inf).argmin(dim=1)
        u = parent[rows, v]
        edges[:, step, 0] = torch.minimum(u, v)
        edges[:, step, 1] = torch.maximum(u, v)
        in_tree[rows, v] = True
        row = dist[rows, v]
        closer = row < key
        key = torch.where(closer, row, key)
        parent = torch.where(closer, v[:, None], parent)
    return edges


def _use_native(device: torch.device, backend: str) -> bool:
    if backend not in ("auto", "native", "torch"):
        raise ValueError(f"backend must be 'auto', 'native' or 'torch', got {backend!r}")
    if backend == "native" and device.type != "cpu":
        raise ValueError("backend='native' needs CPU tensors")
    return backend == "native" or (backend == "auto" and device.type == "cpu")


def _canonical(edges: Tensor, deaths: Tensor) -> H0:
    """Orders each cloud's edges by death (stable, so ties keep Prim's deterministic order)."""
    deaths, order = deaths.sort(dim=-1, stable=True)
    edges = edges.gather(-2, order[..., None].expand(*order.shape, 2))
    return H0(deaths, edges)


def _empty(shape: torch.Size, like: Tensor) -> H0:
    deaths = like.new_zeros(*shape, 0)
    return H0(deaths, torch.zeros(*shape, 0, 2, dtype=torch.long, device=like.device))


def h0_persistence(points: Tensor, metric: Metric = "l1", *, backend: str = "auto") -> H0:
    """Exact 0-dim Vietoris-Rips persistence of clouds ``points`` (..., n, d).

    Returns :class:`H0` with the n-1 death times (ascending, in the units of the metric) and their
    edges.  All leading dimensions are clouds computed in one call.  Duplicate points give death
    times of exactly 0, which are kept.  On CPU the tree is found without ever building the
    n x n matrix (memory O(n d)), so 50,000 points of dimension 160 fit.
    ``backend``: "auto" (compiled kernel on CPU, torch elsewhere), "native" or "torch".
    """
    check_points(points, check_values=False)
    native = _use_native(points.device, backend)
    if not native:  # the native kernel checks as it reads
        check_finite(points, "points")
    p = metric_order(metric)
    *batch, n, d = points.shape
    if n == 1:
        check_finite(points, "points")
        return _empty(points.shape[:-2], points)
    flat = points.reshape(-1, n, d)
    if native and p == 2.0 and d >= _MATMUL_MIN_DIM and n <= _MATMUL_MAX_POINTS:
        check_finite(flat, "points")
        with torch.no_grad():
            # Selection only: the matmul expansion errs near duplicates (centring shrinks that),
            # and the lengths below are recomputed exactly from the points.
            centred = flat - flat.mean(dim=-2, keepdim=True)
            dist = torch.cdist(centred, centred, compute_mode="use_mm_for_euclid_dist")
        edges = _native_tree(dist, None, "points")
    elif native:
        edges = _native_tree(flat, p, "points")
    else:
        with torch.no_grad():
            dist = torch.cdist(flat, flat, p=p, compute_mode="donot_use_mm_for_euclid_dist")
            edges = _prim_torch(dist)
    edges = edges.reshape(*batch, n - 1, 2)
    return _canonical(edges, edge_lengths(points, edges, p))


def h0_persistence_from_distances(dist: Tensor, *, backend: str = "auto") -> H0:
    """Exact 0-dim persistence from symmetric distance matrices ``dist`` (..., n, n).

    Death times are gathered from ``dist`` at the tree's edges, so gradients flow into ``dist``.
    """
    check_distance_matrix(dist)
    *batch, n, _ = dist.shape
    if n == 1:
        return _empty(dist.shape[:-2], dist)
    flat = dist.reshape(-1, n, n)
    if _use_native(dist.device, backend):
        edges = _native_tree(flat, None, "distance matrix")
    else:
        with torch.no_grad():
            edges = _prim_torch(flat)
    deaths = flat[torch.arange(flat.shape[0], device=dist.device)[:, None], edges[..., 0], edges[..., 1]]
    return _canonical(edges.reshape(*batch, n - 1, 2), deaths.reshape(*batch, n - 1))
