"""The device-agnostic H0 engine: Borůvka's minimum spanning tree in batched torch operations.

Every round, each component takes its lightest edge to another component and the components
joined by those edges merge (pointer jumping).  Every component merges with at least one other,
so c components become at most floor(c / 2): floor(log2 n) rounds always suffice.  Edges are
ordered by (value, smaller index, larger index), a strict total order, and the values are the
ones every engine compares (:func:`~corel.topology.distances.compared_pairwise`: for l1 and l2
sums in corel's fixed order, squared for l2, as the compiled Prim of ``corel._native`` computes
them): the tree is unique and the same bit for bit in every engine on every device.

Two schedules share that round:

* **Fixed rounds** (clouds under :data:`LIST_MIN_POINTS` points whose (B, n, n) matrix fits, as
  in the connectivity loss): every round is a masked minimum over the whole matrix, run floor(log2 n)
  times with no host synchronisation, on every cloud of the batch at once.  For float32 an edge's
  value bits and its index pair are packed into one int64, so one reduction orders by both
  (float64 reduces the two one after the other).
* **Neighbour lists** (larger clouds): one scan gives every vertex its lightest edge and a list of
  its :data:`LIST_LENGTH` nearest vertices outside its component.  Components only grow, so in
  later rounds a vertex's lightest edge is the first list entry still outside, certain while it
  is lighter than everything beyond the list; a vertex is scanned again only when its list is used
  up *and* what lies beyond it could still beat its component's lightest edge.  A round then costs
  O(n x list) plus the few rescans, not O(n^2).  Rows come from one matrix while it fits
  (:func:`whole_matrix_fits`), else they are recomputed in row tiles (memory O(n x tile)), so
  100,000 points fit.  A scan reads cheap approximations (``torch.cdist``; for l2 in dimension >=
  :data:`SCREEN_MIN_DIM` the matmul expansion |x|^2 + |y|^2 - 2 x.y, the fast path of
  ``torch.cdist``), gives only the listed neighbours their compared values, and bounds everything
  beyond the list by the approximation's proven rounding error; where the bound cannot decide,
  the row is computed in full.  The approximations only save work; the tree is the same.
  This schedule synchronises with the host once or twice per round (to gather the rows to rescan).
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
from torch import Tensor

from corel.topology.distances import cdist, compared_pairwise, padded_width

# Off the GPU, one (B, n, n) distance matrix up to this many entries; then row tiles of at most
# TILE_ELEMENTS entries.
FULL_MATRIX_ELEMENTS = 1 << 24
TILE_ELEMENTS = 1 << 24
# Clouds of at least this many points use the neighbour-list schedule.  On a 2-core CPU at
# d = 160 the lists took 3.4 ms at n = 256 where the fixed rounds took 29 ms at n = 255 (l1).
LIST_MIN_POINTS = 256
LIST_LENGTH = 16
# l2 rows are screened through the matmul expansion from this dimension on.  On a 2-core CPU,
# n = 4,000 (whole matrix), one tree: expansion / torch.cdist rows 103 / 121 ms at d = 16, 107 /
# 150 at 32, 162 / 536 at 160; below 16 within 6% of each other, so cdist rows keep those.
SCREEN_MIN_DIM = 16
# Peak bytes per matrix entry of a fixed round: distances (4) then int64 keys, their masked copy
# and the mask.
_BYTES_PER_ENTRY = 21

# Metrics whose compared values are sums in corel's fixed order (corel.topology.distances).
FIXED_ORDER = (1.0, 2.0)
# A kernel for those values: (a (..., m, d), b (..., n, d), p) -> (..., m, n), equal bit for bit to
# fixed_order_pairwise with memory O(m n) (corel.topology.fused.pairwise_values).
Pairwise = Callable[[Tensor, Tensor, float], Tensor]

_MAX = torch.iinfo(torch.int64).max
_LOW32 = 0xFFFFFFFF


def rounds(n: int) -> int:
    """Borůvka rounds that always suffice for n points: floor(log2 n) (0 for one point)."""
    return n.bit_length() - 1


def _jumps(n: int, r: int) -> int:
    """Pointer jumps that flatten the merge forest of round r: it has at most c = floor(n / 2^r)
    components, so a tree of it is at most c - 1 deep and ceil(log2(c - 1)) jumps reach its root."""
    deepest = (n >> r) - 1
    return math.ceil(math.log2(deepest)) if deepest > 1 else 0


class _Packed:
    """Keys as one int64: the length's float32 bits (monotone for lengths >= 0) above the edge id."""

    def __init__(self, n: int):
        self.n = n
        self.none = 0x7F800000 << 32  # +inf's bits with edge id 0: "no edge"

    def of(self, w: Tensor, eid: Tensor) -> Tensor:
        return (w.contiguous().view(torch.int32).to(torch.int64) << 32) | eid

    def segment_min(self, comp: Tensor, keys: Tensor) -> Tensor:
        return torch.full_like(keys, self.none).scatter_reduce_(1, comp, keys, "amin")

    def valid(self, keys: Tensor) -> Tensor:
        return keys < self.none

    def edge(self, keys: Tensor) -> Tensor:
        return keys & _LOW32  # 0 (a valid vertex pair) where there is no edge

    def keep(self, mask: Tensor, keys: Tensor) -> Tensor:
        return torch.where(mask, keys, self.none)

    def cat(self, chosen: list[Tensor]) -> Tensor:
        return torch.cat(chosen, dim=1)

    def sorted_edges(self, keys: Tensor) -> Tensor:
        return keys.sort(dim=1).values & _LOW32

    def order(self, keys: Tensor) -> Tensor:
        """The permutation that sorts (B, k) keys (distinct: no ties to break)."""
        return keys.argsort(dim=1)


class _Pairs:
    """Keys as (length, edge id) pairs, reduced one after the other (float64, n > 65,536, lists)."""

    def __init__(self, n: int):
        self.n = n

    def of(self, w: Tensor, eid: Tensor) -> tuple[Tensor, Tensor]:
        return w, eid

    def segment_min(self, comp: Tensor, keys: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        w, eid = keys
        cw = torch.full_like(w, math.inf).scatter_reduce_(1, comp, w, "amin")
        tied = (w == cw.gather(1, comp)) & (w < math.inf)
        ce = torch.full_like(eid, _MAX).scatter_reduce_(1, comp, torch.where(tied, eid, _MAX), "amin")
        return cw, ce

    def valid(self, keys: tuple[Tensor, Tensor]) -> Tensor:
        return keys[1] < _MAX

    def edge(self, keys: tuple[Tensor, Tensor]) -> Tensor:
        return torch.where(keys[1] < _MAX, keys[1], 0)

    def keep(self, mask: Tensor, keys: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return torch.where(mask, keys[0], math.inf), torch.where(mask, keys[1], _MAX)

    def cat(self, chosen: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        return torch.cat([w for w, _ in chosen], dim=1), torch.cat([e for _, e in chosen], dim=1)

    def sorted_edges(self, keys: tuple[Tensor, Tensor]) -> Tensor:
        return keys[1].gather(1, self.order(keys))

    def order(self, keys: tuple[Tensor, Tensor]) -> Tensor:
        """The permutation that sorts (B, k) keys by length, then edge id."""
        w, eid = keys
        order = eid.argsort(dim=1, stable=True)  # secondary key first, then a stable sort by length
        return order.gather(1, w.gather(1, order).argsort(dim=1, stable=True))


def edge_keys(dtype: torch.dtype, n: int) -> _Packed | _Pairs:
    """How edges of an n-point cloud with values of ``dtype`` are keyed and ordered: packed into
    one int64 for float32 while edge ids fit in the low 32 bits, else as (value, edge id) pairs."""
    return _Packed(n) if dtype == torch.float32 and n <= 1 << 16 else _Pairs(n)


def whole_matrix_fits(b: int, n: int, device: torch.device, bytes_per_entry: int = _BYTES_PER_ENTRY) -> bool:
    """Whether a schedule may keep one (b, n, n) matrix: on a GPU while it takes at most half of
    the free memory, elsewhere (and inside torch.compile, which cannot ask the device) up to
    FULL_MATRIX_ELEMENTS entries."""
    if device.type == "cuda" and not torch.compiler.is_compiling():
        free, _ = torch.cuda.mem_get_info(device)
        return b * n * n * bytes_per_entry <= free // 2
    return b * n * n <= FULL_MATRIX_ELEMENTS


def _edge_ids(i: Tensor, j: Tensor, n: int) -> Tensor:
    """Edge ids min * n + max of the vertex pairs (i, j), broadcast."""
    return torch.minimum(i, j) * n + torch.maximum(i, j)


def _selection_rows(a: Tensor, b: Tensor, p: float, pairwise: Pairwise | None) -> Tensor:
    """:func:`compared_pairwise` of ``a`` (B, m, d) against ``b`` (B, n, d), by the ``pairwise``
    kernel where one is given, else in pieces of ``a``'s rows so that the fixed-order differences
    stay within TILE_ELEMENTS entries."""
    if pairwise is not None and p in FIXED_ORDER:
        return pairwise(a, b, p)
    (batch, m, d), n = a.shape, b.shape[1]
    rows = max(1, TILE_ELEMENTS // (batch * n * padded_width(d)))
    if rows >= m:
        return compared_pairwise(a, b, p)
    return torch.cat([compared_pairwise(a[:, r: r + rows], b, p) for r in range(0, m, rows)], dim=1)


def _merge(comp: Tensor, lightest, keys_of, idx: Tensor, r: int, last: bool):
    """One round's merge: every component (slot ``comp`` labels) joins the one at the other end of
    its lightest edge -> (the new labels (B, n), the keys of the edges that merged, once each).
    ``idx`` is arange(n); after the ``last`` round the labels are not needed (not computed)."""
    n = len(idx)
    has_edge = keys_of.valid(lightest)
    eid = keys_of.edge(lightest)
    ends = comp.gather(1, eid // n) + comp.gather(1, eid % n)
    parent = torch.where(has_edge, ends - idx, idx)  # the component at the edge's other end
    # two components that chose each other chose the same edge: the smaller one stays a root
    # (a component without an edge is its own parent, which changes nothing here)
    parent = torch.where(parent.gather(1, parent) == idx, torch.minimum(idx, parent), parent)
    merged = keys_of.keep(parent != idx, lightest)
    if last:
        return comp, merged
    for _ in range(_jumps(n, r)):
        parent = parent.gather(1, parent)
    return parent.gather(1, comp), merged


def minimum_spanning_tree(data: Tensor, p: float | None, pairwise: Pairwise | None = None) -> Tensor:
    """Minimum spanning trees of clouds ``data`` (B, n, d) under the l_p metric, or of distance
    matrices (B, n, n) when ``p`` is None -> edges (B, n-1, 2) int64 (i < j), ordered by (length,
    i, j).  ``data`` is finite, float32 or float64; no autograd.  With a ``pairwise`` kernel, the
    l1 and l2 values come from it (whole rows, exact) instead of torch operations and cdist."""
    b, n = data.shape[0], data.shape[1]
    if n < LIST_MIN_POINTS and (p is None or whole_matrix_fits(b, n, data.device)):
        keys_of = edge_keys(data.dtype, n)
        chosen = _fixed_rounds(data, p, keys_of, pairwise)
    else:
        keys_of = _Pairs(n)
        chosen = _listed_rounds(_Rows(data, p, pairwise), keys_of)
    eid = keys_of.sorted_edges(keys_of.cat(chosen))[:, : n - 1]  # exactly n - 1 merges were recorded
    return torch.stack([eid // n, eid % n], dim=-1)


def _fixed_rounds(data: Tensor, p: float | None, keys_of, pairwise: Pairwise | None) -> list:
    """floor(log2 n) rounds over the whole (B, n, n) matrix, no host synchronisation."""
    b, n = data.shape[0], data.shape[1]
    idx = torch.arange(n, device=data.device)
    dist = data if p is None else _selection_rows(data, data, p, pairwise)  # distance matrices as they are
    packed = isinstance(keys_of, _Packed)
    if packed:  # one int64 matrix: every round is then a masked minimum over it
        dist = keys_of.of(dist, _edge_ids(idx[:, None], idx, n))
    comp = idx.repeat(b, 1)  # each vertex's component, named by a vertex of it
    chosen = []
    for r in range(rounds(n)):
        same = comp[:, :, None] == comp[:, None, :]
        if packed:
            nearest = dist.masked_fill(same, keys_of.none).amin(dim=2)
        else:  # the first minimum is the smaller neighbour, hence the smaller edge id
            w, u = dist.masked_fill(same, math.inf).min(dim=2)
            nearest = (w, _edge_ids(idx, u, n))
        comp, merged = _merge(comp, keys_of.segment_min(comp, nearest), keys_of, idx, r, r == rounds(n) - 1)
        chosen.append(merged)
    return chosen


def _listed_rounds(rows: "_Rows", keys_of: _Pairs) -> list:
    """Borůvka rounds over neighbour lists; rows are scanned again only where they could matter."""
    b, n = rows.b, rows.n
    k = min(LIST_LENGTH, n)
    device, dtype = rows.data.device, rows.data.dtype
    idx = torch.arange(n, device=device)
    comp = idx.repeat(b, 1)
    listed = torch.zeros(b, n, k, dtype=torch.long, device=device)  # neighbours, by screened length
    lengths = torch.full((b, n, k), math.inf, dtype=dtype, device=device)  # their compared values
    beyond = torch.full((b, n), -math.inf, dtype=dtype, device=device)  # at most any unlisted value
    chosen = []
    for r in range(rounds(n)):
        alive = (comp != comp[:, :1]).any(dim=1, keepdim=True)  # clouds of more than one component
        if not alive.any():
            break
        outside = comp.gather(1, listed.view(b, -1)).view(b, n, k) != comp[:, :, None]
        w = torch.where(outside, lengths, math.inf).amin(dim=2)
        u = torch.where(outside & (lengths == w[..., None]), listed, n).amin(dim=2)
        lightest = keys_of.segment_min(comp, (w, _edge_ids(idx, u, n)))
        # a row is unsure when something beyond its list might beat its listed best; it matters
        # only when that could also beat its component's lightest edge
        rescan = alive & ~(w < beyond) & (beyond <= lightest[0].gather(1, comp))
        flat = rescan.view(-1).nonzero()[:, 0]
        if len(flat):
            sw, su, slisted, slengths, sbeyond = rows.scan(flat, comp, k)
            w.view(-1)[flat], u.view(-1)[flat] = sw, su
            listed.view(-1, k)[flat], lengths.view(-1, k)[flat], beyond.view(-1)[flat] = slisted, slengths, sbeyond
            lightest = keys_of.segment_min(comp, (w, _edge_ids(idx, u, n)))
        comp, merged = _merge(comp, lightest, keys_of, idx, r, r == rounds(n) - 1)
        chosen.append(merged)
    return chosen


def _input_rounding(x: Tensor) -> float:
    """Unit roundoff of the matmul's inputs under torch's float32 precision setting for ``x``'s
    device: TF32 keeps 10 mantissa bits, bfloat16 7; unknown settings count as bfloat16."""
    if x.dtype == torch.float64:
        return 2.0 ** -53
    backend = {"cuda": torch.backends.cuda, "cpu": torch.backends.mkldnn}.get(x.device.type)
    setting = getattr(getattr(backend, "matmul", None), "fp32_precision", "bf16")
    return {"tf32": 2.0 ** -11, "bf16": 2.0 ** -8}.get(setting, 2.0 ** -24)


class _Rows:
    """The rows of the neighbour-list schedule: scans of vertices against whole clouds.

    For l1 and l2 the engines compare the fixed-order values (:func:`compared_pairwise`); a scan
    reads cheaper approximations of them (``torch.cdist``, or for l2 from SCREEN_MIN_DIM on the
    matmul expansion of squared lengths), computes the fixed-order values of the listed
    neighbours only, and bounds every unlisted value from below by the approximation's proven
    error; a row whose bound does not clear its listed best is computed in the fixed order whole.
    Other metrics (linf: a maximum, exact in any order; other p; distance matrices) compare what
    they read.  With a ``pairwise`` kernel, l1 and l2 rows are read from it: exact values, so the
    bounds always decide except among ties."""

    def __init__(self, data: Tensor, p: float | None, pairwise: Pairwise | None = None):
        self.data, self.p = data, p
        self.b, self.n, d = data.shape
        self.verified = p in FIXED_ORDER
        self.pairwise = pairwise if self.verified else None
        self.screen = p == 2.0 and d >= SCREEN_MIN_DIM and self.pairwise is None
        u = torch.finfo(data.dtype).eps / 2
        # a fixed-order value is within (d + 1) u of the true sum (relative), cdist's too, plus the
        # squaring of cdist's l2 root: the lower bounds shrink by this, with a factor 4 to spare
        self.shrink = 1 - 4 * (2 * d + 6) * u
        if self.screen:
            # Centred, the expansion's rounding error shrinks with the norms.  The bound
            # |approx - true squared length| <= slack per row covers the centring, both norms, the
            # dot product of d terms (gamma_d) and the input rounding, with a factor 4 to spare.
            self.centred = data - data.mean(dim=1, keepdim=True)
            self.norms = self.centred.square().sum(dim=2)
            far = self.norms.amax(dim=1, keepdim=True)
            self.slack = 4 * ((d + 10) * u + 2 * _input_rounding(data)) * (self.norms + far)
        self.matrix = None
        if p is None:
            self.matrix = data
        elif whole_matrix_fits(self.b, self.n, data.device, data.element_size() + 1):
            self.matrix = self._block(slice(None), slice(None))
        self.tile = max(1, TILE_ELEMENTS // self.n)

    def _block(self, cloud, rows) -> Tensor:
        """Row values of ``rows`` of ``cloud`` (an index or a slice) against the whole cloud: the
        compared values, or for l1 and l2 their approximations (squared for l2)."""
        if self.pairwise is not None:
            return self.pairwise(self.data[cloud][..., rows, :], self.data[cloud], self.p)
        if self.screen:
            c, s = self.centred[cloud], self.norms[cloud]
            return torch.matmul(c[..., rows, :], c.mT).mul_(-2).add_(s[..., rows, None]).add_(s[..., None, :])
        a, b = self.data[cloud][..., rows, :], self.data[cloud]
        if self.p not in FIXED_ORDER and self.p != math.inf:  # another p: the compared lengths, in row tiles
            return _selection_rows(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]), self.p,
                                   None).view(*a.shape[:-1], -1)
        values = cdist(a, b, self.p)
        return values.square_() if self.p == 2.0 else values

    def _chunks(self, flat: Tensor, by_cloud: bool) -> Iterator[tuple[int, Tensor]]:
        """Ascending flat row indices b * n + i in pieces of at most one tile: (cloud, rows of it)
        when ``by_cloud``, else (-1, rows of any clouds)."""
        if not by_cloud:
            yield from ((-1, rows) for rows in flat.split(self.tile))
            return
        counts = torch.bincount(flat // self.n, minlength=self.b).tolist()
        for cloud, part in enumerate(flat.split(counts)):
            yield from ((cloud, rows) for rows in part.split(self.tile))

    def _inside(self, flat: Tensor, comp: Tensor) -> Tensor:
        """(rows, n) mask of the vertices in the component of each row of ``flat``."""
        return comp.view(-1)[flat, None] == comp[flat // self.n]

    def scan(self, flat: Tensor, comp: Tensor, k: int):
        """Scans rows ``flat`` (ascending b * n + i) of clouds with components ``comp`` (B, n) ->
        per row its lightest edge outside its component (value, neighbour), its k nearest
        neighbours outside, their values, and a lower bound of every unlisted value."""
        n, out = self.n, []
        for cloud, rows in self._chunks(flat, self.matrix is None):
            values = self.matrix.view(-1, n)[rows] if cloud < 0 else self._block(cloud, rows - cloud * n)
            values = values.masked_fill_(self._inside(rows, comp), math.inf)
            near, listed = values.topk(k, dim=1, largest=False)
            if not self.verified:
                w, u = values.min(dim=1)  # the first minimum: the smaller neighbour
                out.append((w, u, listed, near, near[:, -1]))
                continue
            points = self.data.view(-1, self.data.shape[2])
            ends = points[listed + (rows // n * n)[:, None]]
            lengths = compared_pairwise(points[rows, None, :], ends, self.p)[:, 0]
            lengths = lengths.masked_fill_(near == math.inf, math.inf)
            floor = near[:, -1] - self.slack.view(-1)[rows] if self.screen else near[:, -1]
            beyond = floor.clamp_(min=0).mul_(self.shrink)
            w = lengths.amin(dim=1)
            u = torch.where(lengths == w[:, None], listed, n).amin(dim=1)
            unsure = ~(w < beyond)
            if unsure.any():  # the approximation cannot tell: the whole row in the fixed order decides
                w[unsure], u[unsure] = self._nearest_in_fixed_order(rows[unsure], comp)
            out.append((w, u, listed, lengths, beyond))
        return tuple(torch.cat(parts) for parts in zip(*out))

    def _nearest_in_fixed_order(self, flat: Tensor, comp: Tensor) -> tuple[Tensor, Tensor]:
        """The lightest edge outside the component of rows ``flat`` by fixed-order values."""
        found = []
        for cloud, rows in self._chunks(flat, True):
            pts = self.data[cloud: cloud + 1]
            values = _selection_rows(pts[:, rows - cloud * self.n], pts, self.p, self.pairwise)[0]
            found.append(values.masked_fill_(self._inside(rows, comp), math.inf).min(dim=1))
        return torch.cat([w for w, _ in found]), torch.cat([u for _, u in found])
