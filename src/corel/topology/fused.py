"""The Triton kernels of ``backend="triton"``: Prim's tree fused into one kernel for small clouds,
and the fixed-order pairwise values that Borůvka reads on larger ones.

**Fused Prim.**  For small clouds on a GPU, such as the connectivity loss's 16 clouds of 100
codes, Borůvka in torch operations (:mod:`corel.topology.boruvka`) launches some 250 small
kernels and the host path waits for two copies.  Here one launch runs all n - 1 steps of Prim's
algorithm for every cloud of the batch, one program per cloud, keeping the tree state in
registers and re-reading the cloud (n x d) from the cache.  Under the strict edge order (value,
smaller index, larger index) Prim's tree is the unique minimum spanning tree, the one the other
engines return.  The work per cloud is O(n^2 d) on one streaming multiprocessor, so it takes
clouds of up to :data:`FUSED_MAX_POINTS` points with n^2 d up to :data:`FUSED_MAX_WORK`.

**Pairwise values.**  Larger l1 and l2 clouds go to Borůvka, whose rows then come from a tiled
kernel that sums each pair's terms in the fixed order in registers (memory O(m n), where torch's
fixed-order sums build (m, n, d) differences and ``torch.cdist`` only approximates them).

Both compute the values every engine compares bit for bit: l1 and squared l2 sums in corel's
fixed order (:func:`corel.topology.distances.fixed_order_sum`: term i into partial i mod 8, the
partials added in halves), every step one rounded operation.  Squares are one PTX ``mul.rn``
instruction, which no compiler contracts into a multiply-add with the sum whatever the
floating-point fusion setting (the launches ask for fusion off, but torch.compile launches user
kernels with Triton's default, on), and which keeps subnormals (libdevice's ``mul_rn`` flushes
them under Triton's defaults).

Needs the ``triton`` package and a CUDA device (CPU tensors go there and back, one copy each
way); with the environment variable ``TRITON_INTERPRET=1`` set before this module is imported,
Triton's interpreter runs the kernels on CPU tensors, slowly (CI tests them that way).
"""

from __future__ import annotations

import contextlib
import math
import os

import torch
import triton
import triton.language as tl
from torch import Tensor

import corel.topology.boruvka as boruvka

FUSED_MAX_POINTS = 1024
# n^2 d: one program (one multiprocessor) does it all, where Borůvka on the pairwise kernel's rows
# spreads over the GPU.  On an H100 (2026-11-27, docs/persistence.md) 16 clouds of 1,000 points in
# d = 10 (1e7 each) took 2.1 ms fused and 25 ms in torch operations; one cloud of 1,000 points in
# d = 160 (1.6e8) 14.2 ms fused and 6.2 ms on the kernel's rows (forward + backward)
FUSED_MAX_WORK = 1 << 25
# Triton decides at import, by this variable, whether kernels are compiled or interpreted (the
# interpreter runs them on the CPU, slowly: "auto" does not take them then).
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")
# Compiled kernels square in PTX; the interpreter runs no PTX (and contracts nothing).
_COMPILED = tl.constexpr(not INTERPRETED)
# metric codes of the kernels
_MATRIX, _L1, _L2, _LINF = 0, 1, 2, 3
_CODES = {1.0: _L1, 2.0: _L2, math.inf: _LINF}
# tile of the pairwise kernel: TILE x TILE pairs, 8 partial sums each, in registers
_TILE = 32


@triton.jit
def _square(x):
    """x * x rounded once, never fused into a multiply-add with what it is added to, subnormals kept."""
    if _COMPILED:
        if x.dtype == tl.float64:
            return tl.inline_asm_elementwise("mul.rn.f64 $0, $1, $1;", "=l,l", [x], dtype=tl.float64,
                                             is_pure=True, pack=1)
        else:
            return tl.inline_asm_elementwise("mul.rn.f32 $0, $1, $1;", "=r,r", [x], dtype=tl.float32,
                                             is_pure=True, pack=1)
    else:
        return x * x


@triton.jit
def _add_partials(acc, ROWS: tl.constexpr):
    """(ROWS, 8) partial sums -> (ROWS,), added in halves: ((p0 + p4) + (p2 + p6)) + ((p1 + p5) + (p3 + p7))."""
    low, high = tl.split(tl.permute(tl.reshape(acc, (ROWS, 2, 4)), (0, 2, 1)))  # p0-p3, p4-p7
    low, high = tl.split(tl.permute(tl.reshape(low + high, (ROWS, 2, 2)), (0, 2, 1)))
    low, high = tl.split(low + high)
    return low + high


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
                acc = acc + _square(diff)
            elif METRIC == 1:
                acc = acc + tl.abs(diff)
            else:
                acc = tl.maximum(acc, tl.abs(diff))
        if METRIC == 3:
            values = tl.max(acc, axis=1)
        else:
            values = _add_partials(acc, BLOCK)
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


@triton.jit
def _pairwise(a, b, out, m, n, d, SQUARED: tl.constexpr, TILE: tl.constexpr):
    """One TILE x TILE block of the values between rows of ``a`` (B, m, d) and ``b`` (B, n, d).
    One grid axis numbers the blocks (column tile fastest, then row tile, then cloud): CUDA caps
    the other axes at 65,535."""
    block = tl.program_id(0).to(tl.int64)
    col_tiles = tl.cdiv(n, TILE)
    row_tiles = tl.cdiv(m, TILE)
    batch = block // (col_tiles * row_tiles)
    rows = (block // col_tiles % row_tiles) * TILE + tl.arange(0, TILE)
    cols = (block % col_tiles) * TILE + tl.arange(0, TILE)
    lanes = tl.arange(0, 8)
    a_rows = a + batch * m * d + rows.to(tl.int64)[:, None] * d
    b_rows = b + batch * n * d + cols.to(tl.int64)[:, None] * d
    acc = tl.zeros((TILE, TILE, 8), dtype=a.dtype.element_ty)
    for c in range(0, d, 8):
        k = c + lanes
        x = tl.load(a_rows + k[None, :], mask=(rows < m)[:, None] & (k < d)[None, :], other=0.0)
        y = tl.load(b_rows + k[None, :], mask=(cols < n)[:, None] & (k < d)[None, :], other=0.0)
        diff = x[:, None, :] - y[None, :, :]
        if SQUARED:
            acc = acc + _square(diff)
        else:
            acc = acc + tl.abs(diff)
    values = tl.reshape(_add_partials(tl.reshape(acc, (TILE * TILE, 8)), TILE * TILE), (TILE, TILE))
    tl.store(out + batch * m * n + rows.to(tl.int64)[:, None] * n + cols[None, :], values,
             mask=(rows < m)[:, None] & (cols < n)[None, :])


def _on(x: Tensor):
    """Launches on ``x``'s GPU: Triton launches on the current CUDA device, which may be another
    (inside torch.compile the compiled graph places its kernels itself)."""
    if x.is_cuda and not torch.compiler.is_compiling():
        return torch.cuda.device(x.device)
    return contextlib.nullcontext()


def _warps(block: int) -> int:
    """Warps per Prim program: one per 128 vertex slots, 1 to 8."""
    return min(8, max(1, block // 128))


def check_device() -> None:
    """ValueError unless the kernels can run here: a CUDA device, or Triton's interpreter."""
    if not INTERPRETED and not torch.cuda.is_available():
        raise ValueError("backend 'triton' needs a CUDA device and there is none "
                         "(TRITON_INTERPRET=1 emulates it on the CPU, slowly)")


def fits(n: int, d: int, p: float | None) -> bool:
    """Whether the fused Prim takes clouds of ``n`` points of dimension ``d`` under l_p, or (n, n)
    matrices (``p`` None): a step reads a row of the matrix (n values) where it sums n x d
    differences of points."""
    work = n * n * (1 if p is None else d)
    return n <= FUSED_MAX_POINTS and work <= FUSED_MAX_WORK and (p is None or p in _CODES)


def pairwise_values(a: Tensor, b: Tensor, p: float) -> Tensor:
    """The l1 (p = 1) or squared l2 (p = 2) values in the fixed order between the rows of ``a``
    (..., m, d) and ``b`` (..., n, d) -> (..., m, n), equal bit for bit to
    :func:`corel.topology.distances.fixed_order_pairwise`; memory O(m n).  Float32 or float64,
    on the kernels' device."""
    *batch, m, d = a.shape
    n, clouds = b.shape[-2], math.prod(batch)
    out = torch.empty(clouds, m, n, dtype=a.dtype, device=a.device)
    if out.numel():  # Borůvka's row tiles can ask for no rows of a cloud
        a3, b3 = a.reshape(clouds, m, d).contiguous(), b.reshape(clouds, n, d).contiguous()
        grid = (triton.cdiv(m, _TILE) * triton.cdiv(n, _TILE) * clouds,)
        with _on(a3):
            _pairwise[grid](a3, b3, out, m, n, d, SQUARED=p == 2.0, TILE=_TILE, num_warps=4, enable_fp_fusion=False)
    return out.reshape(*batch, m, n)


def prim(data: Tensor, p: float | None) -> tuple[Tensor, Tensor]:
    """The fused Prim on clouds it takes (:func:`fits`): ``data`` (B, n, d) points, or (B, n, n)
    matrices when ``p`` is None, contiguous, on the kernels' device -> (values (B, n-1), edge ids
    min * n + max (B, n-1) int64) in the order Prim adds the edges; the values are those every
    engine compares (fixed-order l1 and squared l2 sums, linf maxima, matrix entries)."""
    b, n, d = data.shape
    values = torch.empty(b, n - 1, dtype=data.dtype, device=data.device)
    eids = torch.empty(b, n - 1, dtype=torch.int64, device=data.device)
    block = max(16, triton.next_power_of_2(n))
    with _on(data):
        _prim[(b,)](data, values, eids, n, d, METRIC=_MATRIX if p is None else _CODES[p], BLOCK=block,
                    num_warps=_warps(block), enable_fp_fusion=False)
    return values, eids


def minimum_spanning_tree(data: Tensor, p: float | None) -> Tensor:
    """Minimum spanning trees of clouds ``data`` (B, n, d) under the l_p metric, or of distance
    matrices (B, n, n) when ``p`` is None -> edges (B, n-1, 2) int64 (i < j), ordered by (value,
    i, j); the same as :func:`corel.topology.boruvka.minimum_spanning_tree`.  Clouds the fused
    Prim takes (:func:`fits`) go through it; larger l1 and l2 clouds through Borůvka reading
    :func:`pairwise_values`; the rest through plain Borůvka.  ``data`` is finite, float32 or
    float64; no autograd."""
    if data.device.type != "cuda" and not INTERPRETED:
        check_device()
        return minimum_spanning_tree(data.cuda(), p).to(data.device)
    n = data.shape[1]
    if not fits(n, data.shape[2], p):
        return boruvka.minimum_spanning_tree(data, p, pairwise_values if p in boruvka.FIXED_ORDER else None)
    keys_of = boruvka.edge_keys(data.dtype, n)
    eid = keys_of.sorted_edges(keys_of.of(*prim(data.contiguous(), p)))
    return torch.stack([eid // n, eid % n], dim=-1)
