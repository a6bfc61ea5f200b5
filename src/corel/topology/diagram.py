"""Persistence results: :class:`Diagram`, the one diagram type, and :class:`H0`, the spanning tree
that dimension 0 is computed from.

Every engine reports its classes with the edges whose lengths are their birth and death, so the
values stay differentiable (gathered from distances with autograd).  :func:`as_diagrams` turns any
result corel produces or accepts (a list of diagrams, one diagram, an :class:`H0` of one cloud, a
torchph-style ``(non_essential, essential)`` pair) into a list of diagrams: what losses and plots take.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import torch
from torch import Tensor

from corel.topology.distances import check_threshold


class Diagram(NamedTuple):
    """Persistence of one homology dimension of one cloud, in the units of the metric.

    dimension: the homology dimension k.
    pairs: (f, 2) finite classes as (birth, death) rows, ascending by death then birth; differentiable.
    essential: (m,) births of the classes still alive at the threshold, ascending; differentiable.
    birth_edges: (f, 2) int64 vertex pairs i <= j whose distance is each birth; for k = 0 every
        vertex is born at 0 and the pair is (v, v) with v the oldest vertex (smallest index) of the
        component that dies (the elder rule).
    death_edges: (f, 2) int64 vertex pairs i < j whose distance is each death.
    essential_edges: (m, 2) int64 vertex pairs whose distance is each essential birth ((v, v) for
        k = 0, v the smallest index of the component).
    """

    dimension: int
    pairs: Tensor
    essential: Tensor
    birth_edges: Tensor
    death_edges: Tensor
    essential_edges: Tensor


class H0(NamedTuple):
    """0-dim persistence of one or many clouds: their minimum spanning trees.

    deaths: (..., n-1) death times, ascending (all births are 0), in the units of the metric.
    edges: (..., n-1, 2) int64 vertex pairs (i < j) whose distance is each death time; ties in
        ascending (i, j) order, which makes the tree and its order unique.
    """

    deaths: Tensor
    edges: Tensor

    def diagram(self, threshold: float = math.inf) -> Diagram:
        """The dimension-0 :class:`Diagram` of one cloud; tree edges longer than ``threshold``
        never enter, so each leaves one more essential class."""
        if self.deaths.ndim != 1:
            raise ValueError(f"expected the H0 of one cloud, got deaths of shape {tuple(self.deaths.shape)}")
        threshold = check_threshold(threshold)  # NaN or a negative one had left every class essential
        n = self.deaths.shape[0] + 1
        keep = self.deaths.detach().double() <= threshold  # exact: a float32 cast of the threshold could let in more
        deaths, edges = self.deaths[keep], self.edges[keep]
        parent = list(range(n))

        def root(v: int) -> int:
            while parent[v] != v:
                parent[v] = parent[parent[v]]
                v = parent[v]
            return v

        born = []
        for i, j in edges.tolist():
            ri, rj = root(i), root(j)
            born.append(max(ri, rj))  # the younger component (larger oldest index) dies
            parent[max(ri, rj)] = min(ri, rj)
        alive = [v for v in range(n) if parent[v] == v]
        born_t = torch.tensor(born, dtype=torch.long, device=edges.device)
        alive_t = torch.tensor(alive, dtype=torch.long, device=edges.device)
        return Diagram(
            dimension=0,
            pairs=torch.stack([torch.zeros_like(deaths), deaths], dim=1),
            essential=deaths.new_zeros(len(alive)),
            birth_edges=torch.stack([born_t, born_t], dim=1),
            death_edges=edges,
            essential_edges=torch.stack([alive_t, alive_t], dim=1),
        )


def _empty_diagram(dimension: int, like: Tensor) -> Diagram:
    edges = torch.zeros(0, 2, dtype=torch.long, device=like.device)
    return Diagram(dimension, like.new_zeros(0, 2), like.new_zeros(0), edges, edges, edges)


def _from_torchph(finite: Tensor, essential: Tensor, dimension: int) -> Diagram:
    """A diagram without edges (torchph reports none): edges of shape (f, 2) filled with -1."""
    essential = essential.reshape(-1)
    unknown = torch.full((finite.shape[0], 2), -1, dtype=torch.long, device=finite.device)
    return Diagram(dimension, finite.reshape(-1, 2), essential, unknown, unknown,
                   torch.full((essential.shape[0], 2), -1, dtype=torch.long, device=finite.device))


def as_diagrams(result: Any) -> list[Diagram]:
    """The diagrams of one cloud, indexed by dimension 0..max, from any single-cloud result.

    Accepts a list of :class:`Diagram` (missing dimensions become empty diagrams), one
    :class:`Diagram`, an :class:`H0` of one cloud (all births 0, one essential class) or a
    torchph-style ``(non_essential, essential)`` pair of tensor lists (edges unknown: -1).
    """
    if isinstance(result, H0):
        return [result.diagram()]
    if isinstance(result, Diagram):
        result = [result]
    if isinstance(result, Sequence) and result and all(isinstance(d, Diagram) for d in result):
        like = result[0].pairs
        diagrams = [_empty_diagram(k, like) for k in range(max(d.dimension for d in result) + 1)]
        for d in result:
            diagrams[d.dimension] = d
        return diagrams
    if (isinstance(result, Sequence) and len(result) == 2
            and all(isinstance(part, Sequence) for part in result) and len(result[0]) == len(result[1])
            and all(isinstance(t, Tensor) for part in result for t in part)):
        return [_from_torchph(finite, essential, k) for k, (finite, essential) in enumerate(zip(*result))]
    if isinstance(result, Sequence) and len(result) == 2 and all(isinstance(part, Sequence) for part in result):
        raise ValueError(f"a (non_essential, essential) pair needs two lists of tensors of one length per dimension, "
                         f"got lengths {len(result[0])} and {len(result[1])}")
    raise ValueError(
        "expected a list of Diagram, a Diagram, a (non_essential, essential) pair of tensor lists "
        f"or an H0 of one cloud, got {type(result).__name__}"
    )


def persistence_pairs(result: Any) -> list[tuple[Tensor, Tensor]]:
    """``(finite (f, 2), essential (m,))`` per homology dimension of any result :func:`as_diagrams` takes."""
    return [(d.pairs, d.essential) for d in as_diagrams(result)]
