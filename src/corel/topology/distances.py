"""Metrics on point clouds: the one metric parser, input checks, exact pairwise distances and
differentiable edge lengths."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, Union

import torch
from torch import Tensor

from corel._checks import check_number, plain_number

Metric = Union[str, float, int]

# Differences in one row tile (rows, n, d) of pairwise_distances under another p and of
# all_lengths; the pairwise backward keeps about seven such temporaries alive (4 MB each in
# float32).  At n = 2,000, d = 64 on one CPU thread, tiles of 2**21 to 2**24 entries left 0.6 to 1.2 GB resident (the allocator keeps
# the freed tiles) and ran at most 1.6x faster; 2**20 stayed at 70 MB.
PAIRWISE_TILE_ELEMENTS = 1 << 20
# torch.cdist on CUDA launches one block per entry: a call of more than 2**31 - 1 entries fails
# ("CUDA error: invalid argument" at 50,000 points on an H100), so calls are cut into row blocks
CDIST_MAX_ENTRIES = 1 << 30

_NAMED = {"l1": 1.0, "manhattan": 1.0, "cityblock": 1.0, "l2": 2.0, "euclidean": 2.0,
          "linf": math.inf, "chebyshev": math.inf}


def metric_order(metric: Metric) -> float:
    """The order p of an l_p metric: "l1" -> 1, "l2" -> 2, "linf" -> inf (also "manhattan",
    "euclidean", "chebyshev"), a number p >= 1, or the text of one ("3", "inf").  ValueError otherwise."""
    if isinstance(metric, str):
        key = metric.strip().lower()
        if key in _NAMED:
            return _NAMED[key]
        try:
            p = float(key)
        except ValueError:
            raise ValueError(f"unknown metric {metric!r}: use 'l1', 'l2', 'linf' or a number p >= 1") from None
    elif isinstance(metric, bool) or not isinstance(metric, (int, float)):
        raise ValueError(f"metric must be a name or a number, got {type(metric).__name__}")
    else:
        p = float(metric)
    if not p >= 1.0:  # also rejects NaN
        raise ValueError(f"metric order p must be >= 1 (an l_p metric), got {metric!r}")
    return p


def metric_name(metric: Metric) -> Metric:
    """The canonical form of a metric: "l1", "l2", "linf", or the float p of another l_p."""
    p = metric_order(metric)
    return {1.0: "l1", 2.0: "l2", math.inf: "linf"}.get(p, p)


def traced(x: Tensor) -> bool:
    """Whether ``x`` flows through torch.compile or a torch.func transform (vmap, jacrev, grad):
    there nothing may read a value on the host, and compiled kernels cannot see the data."""
    return torch.compiler.is_compiling() or torch._C._functorch.is_functorch_wrapped_tensor(x)


def check_threshold(threshold: Any) -> float:
    """A filtration threshold: a number >= 0 (a 0-d tensor too, e.g. a quantile of the distances;
    math.inf for none), else ValueError."""
    threshold = plain_number(threshold)
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not threshold >= 0:
        raise ValueError(f"threshold must be a number >= 0 (math.inf for none), got {threshold!r}")
    return float(threshold)


def check_scale(value: Any, name: str) -> float:
    """A length in the metric's units (eta, a radius): a finite number > 0 (a 0-d tensor too), else ValueError."""
    return check_number(value, name, strict=True)


def check_finite(x: Tensor, what: str) -> None:
    """ValueError when ``x`` holds NaN or inf, naming which."""
    if not torch.isfinite(x).all():
        bad = "NaN" if torch.isnan(x).any() else "inf"
        raise ValueError(f"{what} contains {bad} values")


def check_points(points: Any, check_values: bool = True) -> None:
    """Point clouds must be a floating torch.Tensor (..., n, d) with n, d >= 1 (finite values
    unless ``check_values`` is False, for callers that check while they read)."""
    if not isinstance(points, Tensor):
        raise ValueError(f"points must be a torch.Tensor of shape (..., n, d), got {type(points).__name__}"
                         " (convert with torch.as_tensor)")
    if not points.is_floating_point():
        raise ValueError(f"points must have a floating dtype, got {points.dtype}")
    if points.ndim < 2:
        raise ValueError(f"points must have shape (..., n, d), got shape {tuple(points.shape)}")
    if points.shape[-2] == 0:
        raise ValueError("empty point cloud: n = 0 points")
    if points.shape[-1] == 0:
        raise ValueError("points have dimension d = 0")
    if check_values:
        check_finite(points, "points")


def check_distance_matrix(dist: Any) -> None:
    """Distance matrices must be floating tensors (..., n, n), finite, non-negative, symmetric."""
    if not isinstance(dist, Tensor) or not dist.is_floating_point():
        raise ValueError(f"distance matrix must be a floating torch.Tensor, got {type(dist).__name__}"
                         + (f" of {dist.dtype}" if isinstance(dist, Tensor) else " (convert with torch.as_tensor)"))
    if dist.ndim < 2 or dist.shape[-1] != dist.shape[-2]:
        raise ValueError(f"distance matrix must have shape (..., n, n), got {tuple(dist.shape)}")
    if dist.shape[-1] == 0:
        raise ValueError("empty distance matrix: n = 0 points")
    check_finite(dist, "distance matrix")
    if (dist < 0).any():
        raise ValueError("distance matrix has negative entries")
    if not torch.equal(dist, dist.transpose(-1, -2)):
        gap = float((dist - dist.transpose(-1, -2)).abs().max())
        raise ValueError(f"distance matrix is not symmetric (entries differ by up to {gap:.3g}; torch.cdist's "
                         "can differ in the last bit: pass (D + D.mT) / 2, or the points themselves)")


def cdist(a: Tensor, b: Tensor, p: float) -> Tensor:
    """``torch.cdist`` between the rows of ``a`` (..., m, d) and ``b`` (..., n, d) -> (..., m, n),
    summed without the matmul expansion (exact on ties and duplicates), in blocks of rows of at
    most CDIST_MAX_ENTRIES entries; differentiable."""
    if a.ndim < 2 or b.ndim < 2:  # torch's own error names the shapes
        return torch.cdist(a, b, p=p, compute_mode="donot_use_mm_for_euclid_dist")
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    rows = max(1, CDIST_MAX_ENTRIES // max(1, math.prod(batch) * b.shape[-2]))
    if a.shape[-2] <= rows:
        return torch.cdist(a, b, p=p, compute_mode="donot_use_mm_for_euclid_dist")
    blocks = (torch.cdist(a[..., r: r + rows, :], b, p=p, compute_mode="donot_use_mm_for_euclid_dist")
              for r in range(0, a.shape[-2], rows))
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        return torch.cat(list(blocks), dim=-2)
    out = a.new_empty(*batch, a.shape[-2], b.shape[-2])  # without autograd: no second copy of the whole
    for r, block in zip(range(0, a.shape[-2], rows), blocks):
        out[..., r: r + rows, :] = block
    return out


def pairwise_distances(x: Tensor, metric: Metric = "l1") -> Tensor:
    """All pairwise distances of clouds ``x`` (..., n, d) -> (..., n, n), same dtype and device.

    l2 never uses the matmul expansion ``|x|^2 + |y|^2 - 2xy``: in float32 it errs by up to ~3e-3
    between identical points, which breaks exact ties and duplicates.  Summed by ``torch.cdist``
    (memory O(n^2)), so an entry can differ in the last bit from the death time of the same edge,
    which follows :func:`fixed_order_sum` (:func:`edge_lengths`).  l2 clouds whose squares could
    leave the dtype are divided by a power of two (exact) and the distances multiplied back:
    points at 1e21 in float32 get finite distances, at 1e-27 not 0.  Only those: through the
    scaling, autograd multiplies the incoming gradient by the scale, which near the dtype's limit
    can overflow.  Another p comes from :func:`lp_pairwise` (exact at any p and scale) in row
    tiles, forward and backward: memory O(n^2) plus a few tiles, as torch.cdist's; reverse mode
    only there (``jacrev(jacrev(...))`` for a Hessian; no ``jvp``, ``jacfwd``, ``hessian``).
    """
    p = metric_order(metric)
    if p in (1.0, math.inf) or x.ndim < 2 or x.numel() == 0:  # no powers: nothing to leave the dtype
        return cdist(x, x, p)
    if p != 2.0:  # half precision measured in float32, forward and backward
        return _TiledLengths.apply(measured_in(x), p).to(x.dtype)
    scale, top = power_of_two_scale(x.reshape(-1, *x.shape[-2:]))
    info = torch.finfo(x.dtype)
    inside = (top >= info.tiny ** 0.25) & (top <= info.max ** 0.25)
    scale = torch.where(inside[:, None, None], 1.0, scale).view(*x.shape[:-2], 1, 1)
    scaled = x / scale
    return cdist(scaled, scaled, p) * scale


def fixed_order_sum(v: Tensor) -> Tensor:
    """Sum of non-negative terms over the last dimension in corel's one order, on every device and
    in the compiled kernel alike: term i goes into partial sum i mod 8, each partial in increasing
    i, then the eight partials are added in halves, ((p0 + p4) + (p2 + p6)) + ((p1 + p5) + (p3 + p7)).
    Every step is one exactly rounded addition; torch's own reductions choose their order by
    device and shape, so their last bit differs."""
    if v.shape[-1] % 8:
        v = torch.nn.functional.pad(v, (0, -v.shape[-1] % 8))  # + 0 leaves a partial unchanged
    first, *rest = v.unflatten(-1, (-1, 8)).unbind(-2)  # block b holds terms 8b .. 8b + 7
    partial = first
    for block in rest:
        partial = partial + block
    while partial.shape[-1] > 1:
        low, high = partial.chunk(2, dim=-1)
        partial = low + high
    return partial[..., 0]


def padded_width(d: int) -> int:
    """Coordinates :func:`fixed_order_sum` works on: d rounded up to a multiple of 8 (what tiles of
    fixed-order differences must count)."""
    return -(-d // 8) * 8


def fixed_order_pairwise(a: Tensor, b: Tensor, p: float) -> Tensor:
    """The l1 distances (p = 1) or squared l2 distances (p = 2) between the rows of ``a`` (..., m, d)
    and ``b`` (..., n, d) -> (..., m, n), summed by :func:`fixed_order_sum`: the values every engine
    selects spanning trees with.  Memory (..., m, n, d): callers bound m."""
    diff = a[..., :, None, :] - b[..., None, :, :]
    return fixed_order_sum(diff.abs() if p == 1.0 else diff * diff)  # x * x == |x| * |x| exactly


def lp_pairwise(a: Tensor, b: Tensor, p: float) -> Tensor:
    """The l_p distances (p other than 1, 2 and inf) between the rows of ``a`` (..., m, d) and ``b``
    (..., n, d) -> (..., m, n), each relative to its largest difference (:func:`lp_norm`): exact at
    any p and scale, where ``torch.cdist`` sums raw p-th powers (which overflow beyond p = 512 on
    a cloud of extent 4 and underflow for short edges).  Memory (..., m, n, d): callers bound m."""
    return lp_norm(a[..., :, None, :] - b[..., None, :, :], p)


def compared_pairwise(a: Tensor, b: Tensor, p: float) -> Tensor:
    """What every engine compares between points ``a`` (..., m, d) and ``b`` (..., n, d) -> (..., m, n)
    (Prim, Borůvka, the ball counts): for l1 and l2 the sums in corel's fixed order (squared for
    l2), those of the native kernel and of the death times, so every engine on every device picks
    the same tree bit for bit; for linf the maximum (exact in any order); for another p the
    lengths of :func:`lp_pairwise`.  Memory (..., m, n, d) except for linf: callers bound m."""
    if p in (1.0, 2.0):
        return fixed_order_pairwise(a, b, p)
    if p == math.inf:
        return cdist(a, b, p)
    return lp_pairwise(a, b, p)


def lp_norm(v: Tensor, p: float) -> Tensor:
    """l_p norm over the last dimension.  l1 and l2 are rounded alike on CPU and GPU (exactly
    rounded operations in one fixed order), linf is a maximum (exact anyway); other p use torch's
    norm of each row divided by its largest term (pow is not exactly rounded, so other p agree
    between engines and devices to rounding, not bit for bit).  At v = 0 the gradient is 0, not NaN."""
    if p == math.inf:
        return v.abs().amax(dim=-1)
    if p == 1.0:
        return fixed_order_sum(v.abs())
    if p != 2.0:
        # each row divided by its largest |v| first: p-th powers of terms <= 1 never overflow, and
        # those that underflow are below the sum's rounding, at any p and scale (as the native kernel)
        top = v.abs().amax(dim=-1, keepdim=True)
        safe = torch.where(top > 0, top, 1.0)
        return torch.linalg.vector_norm(v / safe, ord=p, dim=-1) * safe[..., 0]
    total = fixed_order_sum(v.square())
    positive = total > 0
    return torch.where(positive, _sqrt(torch.where(positive, total, 1.0)), 0.0)  # sqrt' is infinite at 0


def _sqrt(s: Tensor) -> Tensor:
    """Square root of ``s`` >= 0, exactly rounded on every device: torch's eager CPU kernel is not
    (1% of float64 roots one ulp off whichever instruction set it dispatches to, 17% of float32
    roots on AVX-512); CUDA's is IEEE's, and
    compiled CPU code's was exact (0 of 10^6 off).  float32 (and lower) goes through float64 and
    back: a float32 root is never within float64's error of a rounding midpoint.  float64 on the
    CPU gets its last bit corrected (:func:`_root_correction`)."""
    if s.dtype != torch.float64:
        return s.double().sqrt().to(s.dtype)
    root = s.sqrt()
    if s.device.type != "cpu" or torch.compiler.is_compiling():
        return root
    return root + _root_correction(s, root.detach())  # gradients through torch's root


_SPLIT = 2.0 ** 27 + 1  # Veltkamp's constant: splits a double into two halves of 26 bits


@torch.no_grad()
def _root_correction(s: Tensor, r: Tensor) -> Tensor:
    """The step (0 or +-1 ulp) that takes ``r``, a float64 square root of ``s`` within one ulp,
    to the exactly rounded one.  Decided exactly: with u = ulp(r), the root lies above the
    midpoint r + u/2 iff s - r^2 > r u + u^2/4, and every term is a whole multiple of u^2 (r^2 as
    p + q exactly by Dekker's product), so the sign of (s - p - r u) - q decides; below r - u/2
    likewise (r - u/4 where r is a power of two).  Eager elementwise operations, one rounding
    each (a fused multiply-add would break Dekker's product: not for compiled code).  Roots of
    s outside [2**-900, 2**1000], where the multiples of u^2 leave the range, stay as they are."""
    mantissa, exponent = torch.frexp(r)
    u = torch.ldexp(torch.ones_like(r), exponent - 53)
    c = r * _SPLIT
    hi = c - (c - r)
    lo = r - hi
    p = r * r
    q = ((hi * hi - p) + 2 * hi * lo) + lo * lo  # r^2 - p, exactly
    a = s - p  # exact: s and p are within a factor 2 of each other
    below = torch.where(mantissa == 0.5, u / 2, u)  # the spacing under r
    step = torch.where((a - r * u) - q > 0, u, torch.where((a + r * below) - q <= 0, -below, 0.0))
    return torch.where((s >= 2.0 ** -900) & (s <= 2.0 ** 1000), step, 0.0)


def edge_lengths(x: Tensor, edges: Tensor, metric: Metric = "l1") -> Tensor:
    """Differentiable lengths of ``edges`` (..., k, 2) between points of ``x`` (..., n, d) -> (..., k),
    in the units of ``metric`` and summed in the fixed order the death times use.

    ``edges`` holds integer vertex indices in [0, n) and has ``x``'s leading dimensions; gradients
    flow to the two end points of every edge through the distance itself.  The check of the
    indices' range reads a value on the host, so inside ``torch.compile`` and on edges batched by
    ``torch.func.vmap`` it is left out (an index out of range is then the gather's error on CPU, a
    device assert on a GPU).  Huge or tiny
    coordinates neither overflow nor underflow (:func:`lengths_of`).
    """
    p = metric_order(metric)
    check_points(x, check_values=False)
    if not isinstance(edges, Tensor) or edges.is_floating_point() or edges.is_complex() or edges.dtype == torch.bool:
        raise ValueError("edges must be an integer torch.Tensor of vertex indices, got "
                         + (f"{edges.dtype}" if isinstance(edges, Tensor) else type(edges).__name__))
    if edges.ndim != x.ndim or edges.shape[-1] != 2 or edges.shape[:-2] != x.shape[:-2]:
        raise ValueError(f"edges must have shape (..., k, 2) with the points' leading dimensions "
                         f"{tuple(x.shape[:-2])}, got {tuple(edges.shape)}")
    n, d = x.shape[-2:]
    if edges.numel() and not traced(edges):  # a data-dependent branch: not inside a graph or a transform
        low, high = torch.aminmax(edges)
        if low < 0 or high >= n:
            raise ValueError(f"edges index vertices {int(low)}..{int(high)}, outside 0..{n - 1}")
    points = measured_in(x.reshape(-1, n, d))  # as the death times are; returned in x's dtype
    lengths = lengths_of(points, edges.reshape(len(points), *edges.shape[-2:]).to(torch.long), p)
    return lengths.to(x.dtype).reshape(edges.shape[:-1])


def measured_in(x: Tensor) -> Tensor:
    """``x`` in the dtype lengths are measured in (differentiably): float64 stays float64, every
    other floating dtype goes to float32."""
    return x if x.dtype == torch.float64 else x.float()


def power_of_two_scale(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per cloud of ``x`` (B, n, d), the power of two s with max|x| / s in [1, 2): dividing by it
    is exact.  Returns (s as (B, 1, 1), max|x| per cloud (B,), NaN or inf where the cloud holds one)."""
    top = x.detach().abs().amax(dim=(1, 2))
    exponent = torch.frexp(top).exponent - 1
    return torch.ldexp(torch.ones_like(top), exponent)[:, None, None], top


def lengths_of(points: Tensor, edges: Tensor, p: float, scaled: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """:func:`edge_lengths` of int64 ``edges`` (B, k, 2) between float32 or float64 ``points``
    (B, n, d) -> (B, k), unchecked: for callers whose indices are in [0, n) by construction.

    Measured on the clouds divided by a power of two (:func:`power_of_two_scale`; pass
    ``scaled`` = (points / s, s) where they are at hand), so squares and p-th powers neither
    overflow nor underflow, and multiplied back: the same bits as without scaling wherever that
    does not overflow or underflow, a power of two being exact.
    """
    if scaled is None:
        with torch.no_grad():
            scale = power_of_two_scale(points)[0]
            scaled = points / scale, scale
    return _Lengths.apply(points, *scaled, edges, p)[0]


def edge_vectors(points: Tensor, edges: Tensor) -> Tensor:
    """x_i - x_j (B, k, d) for the int64 ``edges`` (B, k, 2) = (i, j) of ``points`` (B, n, d), unchecked."""
    batch, n, d = points.shape
    ends = edges.reshape(batch, -1)  # (B, 2k): i0, j0, i1, j1, ...
    first, second = points.gather(1, ends[..., None].expand(-1, -1, d)).unflatten(1, (-1, 2)).unbind(2)
    return first - second


def _length_gradient(diff: Tensor, lengths: Tensor | None, p: float) -> Tensor:
    """d length / d diff (B, k, d) for edge vectors ``diff`` with l_p ``lengths`` (B, k) (unused
    for l1): torch's own rules for its norms, 0 at length 0 and at zero coordinates, and alike
    at any scale."""
    if p == 1.0:
        return diff.sign()
    positive = (lengths > 0)[..., None]
    if p == math.inf:  # torch's amax shares the gradient among tied maxima
        top = diff.abs() == lengths[..., None]
        return diff.sign() * top / top.sum(dim=-1, keepdim=True)
    safe = torch.where(positive, lengths[..., None], 1.0)
    if p == 2.0:
        return torch.where(positive, diff / safe, 0.0)
    # sign * (|diff| / length)^(p-1): finite for every p >= 1 (|diff|^(p-2) is inf at 0 for p < 2);
    # zero bases masked too (at duplicates and at coordinates two points share), so a double
    # backward meets no inf * 0 from pow's derivative at 0 when p < 2
    base = diff.abs() / safe
    nonzero = base > 0
    return torch.where(nonzero, diff.sign() * torch.where(nonzero, base, 1.0).pow(p - 1), 0.0)


def _edge_gradient(scaled: Tensor, edges: Tensor, lengths: Tensor | None, p: float, grad: Tensor) -> Tensor:
    """The gradient (B, n, d) of the lengths of ``edges`` (B, k, 2) in clouds ``scaled`` (B, n, d)
    (of any scale), weighted by ``grad`` (B, k): one closed form per edge, +- onto its end points."""
    batch, n, d = scaled.shape
    per_edge = _length_gradient(edge_vectors(scaled, edges), lengths, p) * grad[..., None]
    both = torch.stack((per_edge, -per_edge), dim=2).reshape(batch, -1, d)  # onto i0, j0, i1, j1, ...
    return _onto_points(scaled, edges, both, sort=scaled.device.type != "cpu")


def _onto_points(scaled: Tensor, edges: Tensor, both: Tensor, sort: bool) -> Tensor:
    """Sums ``both`` (B, 2k, d), the contributions of edges (B, k, 2) to their end points (i0, j0,
    i1, j1, ...), into (B, n, d) like ``scaled``, each point's in the order of its edges, so every
    device gives the same bits.  The CPU's scatter_add adds serially (``sort`` False).  On CUDA
    scatter_add's atomics add a point of three or more edges in any order, so there (``sort``
    True) index_put with accumulate: it sorts the rows stably and adds each run in order, except
    for rows of one column, which it sums by warp reductions: those get a zero column beside them.
    (The CPU's index_put with accumulate is not serial on several threads.)"""
    batch, n, d = scaled.shape
    if not sort:
        # out of place: under torch.func's vmap the incoming gradient may be batched where the cloud is not
        return torch.zeros_like(scaled).scatter_add(1, edges.reshape(batch, -1, 1).expand(-1, -1, d), both)
    width = max(d, 2)
    rows = (edges + n * torch.arange(batch, device=edges.device)[:, None, None]).reshape(-1)
    values = both.reshape(-1, d) if d == width else torch.cat((both.reshape(-1, d), both.new_zeros(rows.numel(), 1)), 1)
    total = scaled.new_zeros(batch * n, width).index_put((rows,), values, accumulate=True)
    return total[:, :d].reshape(batch, n, d)


def _row_tiles(x: Tensor) -> range:
    """Starts of the row tiles of clouds ``x`` (..., n, d) whose differences to all n points take
    at most PAIRWISE_TILE_ELEMENTS entries, d counted as the fixed order pads it (a tile of r rows
    holds r * x.numel() entries, padded)."""
    per_row = x.numel() // x.shape[-1] * padded_width(x.shape[-1])
    return range(0, x.shape[-2], max(1, PAIRWISE_TILE_ELEMENTS // per_row))


def all_lengths(points: Tensor, metric: Metric) -> Tensor:
    """(n, n) lengths of all edges of the cloud ``points`` (n, d), bit for bit as
    :func:`edge_lengths` gives them (the rounding of the death times): the same division by the
    cloud's power of two, differences and :func:`lp_norm`, in row tiles without gathers; no
    autograd."""
    p = metric_order(metric)
    work = measured_in(points.detach())
    scale = power_of_two_scale(work[None])[0][0]  # (1, 1)
    scaled = work / scale
    starts = _row_tiles(work)
    out = torch.empty(work.shape[0], work.shape[0], dtype=work.dtype, device=work.device)
    for r in starts:
        out[r: r + starts.step] = lp_norm(scaled[r: r + starts.step, None, :] - scaled[None, :, :], p) * scale
    return out.to(points.dtype)


class _TiledLengths(torch.autograd.Function):
    """All pairwise l_p distances (..., n, n) of clouds ``x`` (..., n, d) for p other than 1, 2 and
    inf, by :func:`lp_pairwise` in row tiles, with a backward in the same tiles (the closed form
    of :func:`_length_gradient`): autograd through the tiles would have kept every (rows, n, d)
    difference, O(n^2 d).  Second derivatives differentiate that backward."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, p: float) -> Tensor:
        starts = _row_tiles(x)
        return torch.cat([lp_pairwise(x[..., r: r + starts.step, :], x, p) for r in starts], dim=-2)

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: Tensor) -> None:
        ctx.p = inputs[1]
        ctx.save_for_backward(inputs[0], output)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        x, lengths = ctx.saved_tensors
        starts, parts, onto_others = _row_tiles(x), [], 0
        for r in starts:
            rows = slice(r, r + starts.step)
            diff = x[..., rows, None, :] - x[..., None, :, :]  # (..., rows, n, d): x_i - x_j
            per_pair = _length_gradient(diff, lengths[..., rows, :], ctx.p) * grad[..., rows, :, None]
            parts.append(per_pair.sum(dim=-2))  # d/dx_i of the distances in row i
            onto_others = onto_others - per_pair.sum(dim=-3)  # d/dx_j: the same pairs, opposite sign
        return torch.cat(parts, dim=-2) + onto_others, None


class _Lengths(torch.autograd.Function):
    """Lengths of ``edges`` (B, k, 2) of clouds ``points`` (B, n, d), measured on ``scaled`` =
    ``points`` / ``scale`` ((B, 1, 1) powers of two) and multiplied back -> (lengths (B, k), the
    same in the scaled units, not differentiable).

    Its own backward because a length's gradient does not depend on the scale: autograd through
    ``* scale`` and ``/ scale`` overflowed to inf at coordinates near float32's limit and lost bits
    to underflow at tiny ones, and took twice the kernels (each one a launch on a GPU).  Second
    derivatives differentiate the same closed form (so first derivatives keep their bits);
    torch.func's reverse-mode transforms work (``vmap``, ``jacrev``: a generated vmap rule).  No
    forward mode (``jvp``, ``jacfwd``): torch.compile cannot trace a Function that defines it.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(points: Tensor, scaled: Tensor, scale: Tensor, edges: Tensor, p: float) -> tuple[Tensor, Tensor]:
        lengths = lp_norm(edge_vectors(scaled, edges), p)  # in the units of the scaled clouds
        return lengths * scale[:, :, 0], lengths

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
        points, scaled, scale, edges, p = inputs
        ctx.p = p
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(points, scaled, scale, edges, None if p == 1.0 else output[1])

    @staticmethod
    def backward(ctx, grad: Tensor, _: Tensor | None) -> tuple[Tensor | None, ...]:
        points, scaled, scale, edges, lengths = ctx.saved_tensors
        if torch.is_grad_enabled():  # a double backward: the same closed form, from the tracked points
            scaled = points / scale
            lengths = None if ctx.p == 1.0 else lp_norm(edge_vectors(scaled, edges), ctx.p)
        return _edge_gradient(scaled, edges, lengths, ctx.p, grad), None, None, None, None
