"""The device-agnostic H0 engine: Borůvka's minimum spanning tree in batched torch operations.

Every round, each component takes its lightest edge to another component and the components
joined by those edges merge (pointer jumping).  Every component merges with at least one other,
so c components become at most floor(c / 2): floor(log2 n) rounds always suffice, and they run
that fixed number of times with no host synchronisation, on every cloud of the batch at once.  Edges are ordered by (length,
smaller index, larger index), a strict total order: the tree is unique and the same as the
compiled Prim's (``corel._native``).

Distances come from one (B, n, n) matrix while it fits (:func:`whole_matrix_fits`: on a GPU half of
its free memory, elsewhere :data:`FULL_MATRIX_ELEMENTS` entries); beyond, each round recomputes
them in row tiles of at most :data:`TILE_ELEMENTS` entries, so memory stays O(n x tile) and
100,000 points fit.  For float32 with n <= 65,536 an edge's length bits and its
index pair are packed into one int64, so one reduction orders by both; otherwise the two are
reduced one after the other.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Off the GPU, one (B, n, n) distance matrix (and its packed keys) up to this many entries; then
# row tiles of at most TILE_ELEMENTS entries.
FULL_MATRIX_ELEMENTS = 1 << 24
TILE_ELEMENTS = 1 << 24
# Peak bytes per matrix entry of a round: distances (4) then int64 keys, their masked copy and the mask.
_BYTES_PER_ENTRY = 21

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


class _Pairs:
    """Keys as (length, edge id) pairs, reduced one after the other (float64, or n > 65,536)."""

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
        w, eid = keys
        order = eid.argsort(dim=1, stable=True)  # secondary key first, then a stable sort by length
        w, eid = w.gather(1, order), eid.gather(1, order)
        return eid.gather(1, w.argsort(dim=1, stable=True))


def whole_matrix_fits(b: int, n: int, device: torch.device) -> bool:
    """Whether the rounds may keep one (b, n, n) matrix: on a GPU while it takes at most half of
    the free memory (so n = 50,000 fits on an 80 GB card), elsewhere up to FULL_MATRIX_ELEMENTS."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return b * n * n * _BYTES_PER_ENTRY <= free // 2
    return b * n * n <= FULL_MATRIX_ELEMENTS


def _pair_ids(rows: Tensor, cols: Tensor, n: int) -> Tensor:
    """Edge ids min * n + max of the vertex pairs (rows[i], cols[j]) -> (len(rows), len(cols))."""
    r, c = rows[:, None], cols[None, :]
    return torch.minimum(r, c) * n + torch.maximum(r, c)


def minimum_spanning_tree(data: Tensor, p: float | None) -> Tensor:
    """Minimum spanning trees of clouds ``data`` (B, n, d) under the l_p metric, or of distance
    matrices (B, n, n) when ``p`` is None -> edges (B, n-1, 2) int64 (i < j), ordered by (length,
    i, j).  ``data`` is finite, float32 or float64; no autograd."""
    b, n = data.shape[0], data.shape[1]
    device = data.device
    idx = torch.arange(n, device=device)
    packed = data.dtype == torch.float32 and n <= 1 << 16
    keys_of = _Packed(n) if packed else _Pairs(n)
    whole = p is None or whole_matrix_fits(b, n, device)
    if whole:
        dist = data if p is None else torch.cdist(data, data, p=p, compute_mode="donot_use_mm_for_euclid_dist")
        if packed:  # one int64 matrix: every round is then a masked minimum over it
            matrix = keys_of.of(dist, _pair_ids(idx, idx, n))
            dist = None  # only the keys are read from here on
    tile = max(1, TILE_ELEMENTS // max(1, b * n))

    def nearest_outside(comp: Tensor):
        """Per vertex, the key of its lightest edge to another component (ties: smaller neighbour)."""
        if whole and packed:
            same = comp[:, :, None] == comp[:, None, :]
            return matrix.masked_fill(same, keys_of.none).amin(dim=2)
        ws, us = [], []
        step = n if whole else tile
        for start in range(0, n, step):
            block = dist[:, start: start + step] if whole else torch.cdist(
                data[:, start: start + step], data, p=p, compute_mode="donot_use_mm_for_euclid_dist")
            same = comp[:, start: start + step, None] == comp[:, None, :]
            w, u = block.masked_fill(same, math.inf).min(dim=2)  # the first minimum: the smaller neighbour
            ws.append(w)
            us.append(u)
        w, u = torch.cat(ws, dim=1), torch.cat(us, dim=1)
        return keys_of.of(w, torch.minimum(idx, u) * n + torch.maximum(idx, u))

    comp = idx.repeat(b, 1)  # each vertex's component, named by a vertex of it
    chosen = []
    for r in range(rounds(n)):
        lightest = keys_of.segment_min(comp, nearest_outside(comp))  # per component slot
        has_edge = keys_of.valid(lightest)
        eid = keys_of.edge(lightest)
        ends = comp.gather(1, eid // n) + comp.gather(1, eid % n)
        parent = torch.where(has_edge, ends - idx, idx)  # the component at the edge's other end
        # two components that chose each other chose the same edge: the smaller one stays a root
        mutual = (parent.gather(1, parent) == idx) & (idx < parent)
        parent = torch.where(mutual, idx, parent)
        chosen.append(keys_of.keep(parent != idx, lightest))  # each merge's edge, once
        for _ in range(_jumps(n, r)):
            parent = parent.gather(1, parent)
        comp = parent.gather(1, comp)
    eid = keys_of.sorted_edges(keys_of.cat(chosen))[:, : n - 1]  # exactly n - 1 merges were recorded
    return torch.stack([eid // n, eid % n], dim=-1)
