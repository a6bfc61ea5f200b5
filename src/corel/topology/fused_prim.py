"""Prim's minimum spanning tree as one fused Triton kernel, one program per cloud (``backend="triton"``).

For small clouds on a GPU, such as the connectivity loss's 16 clouds of 100 codes, Borůvka in
torch operations (:mod:`corel.topology.boruvka`) launches some 250 small kernels and the host path
waits for two copies.  Here one launch runs all n - 1 steps of Prim's algorithm for every cloud of
the batch, each program keeping its tree state in registers and re-reading its cloud (n x d) from
the cache.  Under the strict edge order (value, smaller index, larger index) Prim's tree is the
unique minimum spanning tree, the one the other engines return, and the values are theirs bit for
bit: l1 and squared l2 sums in corel's fixed order (:func:`corel.topology.distances.fixed_order_sum`:
term i into partial i mod 8, the partials added in halves), every step one rounded operation (the
kernel is compiled without floating-point fusion, so no multiply-add is contracted).

The work per cloud is O(n^2 d) on one streaming multiprocessor, so clouds of more than
:data:`FUSED_MAX_POINTS` points, and metrics other than l1, l2, linf and distance matrices, go to
Borůvka.  Needs the ``triton`` package and a CUDA device (CPU tensors go there and back, one copy
each way); with the environment variable ``TRITON_INTERPRET=1`` set before this module is imported,
Triton's interpreter runs it on CPU tensors, slowly (CI tests it that way).
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl
from torch import Tensor

import corel.topology.boruvka as boruvka

FUSED_MAX_POINTS = 1024
# Triton decides at import, by this variable, whether kernels are compiled or interpreted.
_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")
# metric codes of the kernel
_MATRIX, _L1, _L2, _LINF = 0, 1, 2, 3
_CODES = {1.0: _L1, 2.0: _L2, math.inf: _LINF}


@triton.jit
def _row(base, here, n, d, idx, real, METRIC: tl.constexpr, BLOCK: tl.constexpr):
    """Compared values between the vertex whose point (or matrix row) starts at ``here`` and every
    vertex of the cloud at ``base`` -> (BLOCK,), +inf at the padding beyond n."""
    if METRIC == 0:
        values = tl.load(here + idx, mask=real, other=0.0)
    else:
        lanes = tl.arange(0, 8)
        starts = idx.to(tl.int64) * d
        acc = tl.zeros((BLOCK, 8), dtype=base.dtype.element_ty)  # partial sums (l1, l2) or maxima (linf)
        for c in range(0, d, 8):
            cols = c + lanes
            inside = cols < d
            # padded terms are 0: adding them leaves a partial unchanged
            pts = tl.load(base + starts[:, None] + cols[None, :], mask=real[:, None] & inside[None, :], other=0.0)
            diff = pts - tl.load(here + cols, mask=inside, other=0.0)[None, :]
            if METRIC == 2:
                acc = acc + diff * diff
            elif METRIC == 1:
                acc = acc + tl.abs(diff)
            else:
                acc = tl.maximum(acc, tl.abs(diff))
        if METRIC == 3:
            values = tl.max(acc, axis=1)
        else:  # the partials added in halves: ((p0 + p4) + (p2 + p6)) + ((p1 + p5) + (p3 + p7))
            low, high = tl.split(tl.permute(tl.reshape(acc, (BLOCK, 2, 4)), (0, 2, 1)))  # p0-p3, p4-p7
            low, high = tl.split(tl.permute(tl.reshape(low + high, (BLOCK, 2, 2)), (0, 2, 1)))
            low, high = tl.split(low + high)
            values = low + high
    return tl.where(real, values, float("inf"))


@triton.jit
def _prim(data, values_out, edges_out, n, d, METRIC: tl.constexpr, BLOCK: tl.constexpr):
    """One cloud per program: the n - 1 edges of its tree (edge id min * n + max) and their
    values, in the order Prim adds them.  ``d`` is n for distance matrices."""
    cloud = tl.program_id(0).to(tl.int64)
    base = data + cloud * n * d
    out = cloud * (n - 1)
    idx = tl.arange(0, BLOCK)
    real = idx < n
    key = _row(base, base, n, d, idx, real, METRIC, BLOCK)  # each vertex's lightest edge to the tree
    src = tl.zeros((BLOCK,), dtype=tl.int32)  # ... and its end in the tree
    done = idx == 0
    for step in range(n - 1):
        open_ = real & ~done
        eid = tl.minimum(src, idx) * n + tl.maximum(src, idx)
        least = tl.min(tl.where(open_, key, float("inf")), axis=0)
        tied = open_ & (key == least)
        best = tl.min(tl.where(tied, eid, BLOCK * BLOCK), axis=0)
        v = tl.min(tl.where(tied & (eid == best), idx, BLOCK), axis=0)
        v = tl.minimum(v, n - 1)  # stays in bounds whatever the values (the callers pass finite ones)
        tl.store(values_out + out + step, least)
        tl.store(edges_out + out + step, best)
        done = done | (idx == v)
        row = _row(base, base + v.to(tl.int64) * d, n, d, idx, real, METRIC, BLOCK)
        new = tl.minimum(idx, v) * n + tl.maximum(idx, v)
        take = real & ~done & ((row < key) | ((row == key) & (new < eid)))
        key = tl.where(take, row, key)
        src = tl.where(take, v, src)


def _warps(block: int) -> int:
    """Warps per program: one per 128 vertex slots, 1 to 8."""
    return min(8, max(1, block // 128))


def fits(n: int, p: float | None) -> bool:
    """Whether the fused kernel takes clouds of ``n`` points under l_p (``p`` None: matrices)."""
    return n <= FUSED_MAX_POINTS and (p is None or p in _CODES)


def minimum_spanning_tree(data: Tensor, p: float | None) -> Tensor:
    """Minimum spanning trees of clouds ``data`` (B, n, d) under the l_p metric, or of distance
    matrices (B, n, n) when ``p`` is None -> edges (B, n-1, 2) int64 (i < j), ordered by (value,
    i, j); the same as :func:`corel.topology.boruvka.minimum_spanning_tree`, which takes the
    clouds the kernel does not (:func:`fits`).  ``data`` is finite, float32 or float64; no autograd."""
    b, n, d = data.shape
    if not fits(n, p):
        return boruvka.minimum_spanning_tree(data, p)
    if data.device.type != "cuda" and not _INTERPRETED:
        if not torch.cuda.is_available():
            raise ValueError(f"backend 'triton' needs a CUDA device, got a tensor on {data.device} and no GPU "
                             "(TRITON_INTERPRET=1 emulates it on the CPU, slowly)")
        return minimum_spanning_tree(data.cuda(), p).to(data.device)
    data = data.contiguous()
    values = torch.empty(b, n - 1, dtype=data.dtype, device=data.device)
    eids = torch.empty(b, n - 1, dtype=torch.int64, device=data.device)
    block = max(16, triton.next_power_of_2(n))
    _prim[(b,)](data, values, eids, n, d, METRIC=_MATRIX if p is None else _CODES[p], BLOCK=block,
                num_warps=_warps(block), enable_fp_fusion=False)
    keys_of = boruvka.edge_keys(data.dtype, n)
    eid = keys_of.sorted_edges(keys_of.of(values, eids))
    return torch.stack([eid // n, eid % n], dim=-1)
