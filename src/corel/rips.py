"""Vietoris-Rips persistence in every homology dimension, differentiable.

The filtration value of an edge is the full pairwise distance (as in gudhi and ripser, not half of
it); a simplex enters at its longest edge.  Dimension 0 is corel's exact H0
(:func:`corel.pershom.h0_persistence`).  Dimensions >= 1 come from giotto-ph's ``ripser_parallel``
(an optional AGPL-3 dependency, imported only when asked for) run on the distance matrix: for
every class the engine names the edge whose length is its birth and the edge whose length is its
death.  Births and deaths are then gathered from differentiable distances at those edges, so
autograd gives exact gradients wherever the pairing is unique (tie-free inputs).

The engine computes in float32: the pairing is the one of the float32 distances, the values are
the distances in the input's dtype at the paired edges.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from corel.distances import Metric, edge_lengths, metric_order, pairwise_distances
from corel.pershom import (
    H0,
    _check_cloud,
    _check_distance_matrix,
    h0_persistence,
    h0_persistence_from_distances,
)

Lengths = Callable[[Tensor], Tensor]


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


def _engine() -> Callable[..., dict]:
    try:
        from gph import ripser_parallel
    except ImportError as err:
        raise ImportError(
            "Vietoris-Rips persistence in dimension >= 1 needs giotto-ph (AGPL-3, optional): "
            "pip install 'corel[higher]'"
        ) from err
    return ripser_parallel


def _check_max_dimension(max_dimension: Any) -> int:
    if isinstance(max_dimension, bool) or not isinstance(max_dimension, Integral) or max_dimension < 0:
        raise ValueError(f"max_dimension must be a non-negative int, got {max_dimension!r}")
    return int(max_dimension)


def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not threshold >= 0:
        raise ValueError(f"threshold must be a number >= 0 (math.inf for none), got {threshold!r}")
    return float(threshold)


def _sorted_pairs(births: Tensor, deaths: Tensor, birth_edges: Tensor, death_edges: Tensor) -> tuple:
    """Orders classes by death, then birth; stable, so engine order breaks exact ties."""
    order = births.detach().argsort(stable=True)
    order = order[deaths.detach()[order].argsort(stable=True)]
    return torch.stack([births[order], deaths[order]], dim=1), birth_edges[order], death_edges[order]


def _h0_diagram(deaths: Tensor, edges: Tensor, threshold: float) -> Diagram:
    """Dimension 0 of one cloud from its minimum spanning tree (deaths ascending)."""
    n = deaths.shape[0] + 1
    keep = deaths.detach() <= threshold
    deaths, edges = deaths[keep], edges[keep]
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


def _engine_diagrams(dist: np.ndarray, max_dimension: int, threshold: float, lengths: Lengths,
                     device: torch.device) -> list[Diagram]:
    """Dimensions 1..max_dimension of one (n, n) float64 distance matrix."""
    # n_threads=1: with more threads giotto-ph 0.2.4 returns wrong birth edges in dimension >= 1.
    result = _engine()(dist, maxdim=max_dimension, thresh=threshold, metric="precomputed",
                       n_threads=1, return_generators=True)
    _, finite, _, essential = result["gens"]
    diagrams = []
    for dim in range(1, max_dimension + 1):
        gens = torch.from_numpy(finite[dim - 1]).to(device)
        birth_edges, death_edges = gens[:, :2].sort(dim=1).values, gens[:, 2:].sort(dim=1).values
        pairs, birth_edges, death_edges = _sorted_pairs(lengths(birth_edges), lengths(death_edges),
                                                        birth_edges, death_edges)
        ess_edges = torch.from_numpy(essential[dim - 1]).to(device).sort(dim=1).values
        births = lengths(ess_edges)
        order = births.detach().argsort(stable=True)
        diagrams.append(Diagram(dim, pairs, births[order], birth_edges, death_edges, ess_edges[order]))
    return diagrams


def _higher_diagrams(data: Tensor, metric: Metric | None, max_dimension: int,
                     threshold: float) -> list[Diagram]:
    """Dimensions 1..max_dimension of one cloud (n, d) under ``metric``, or of one distance matrix
    (n, n) when ``metric`` is None."""
    cpu64 = dict(device="cpu", dtype=torch.float64)
    if metric is None:
        dist = data.detach().to(**cpu64).numpy()

        def lengths(edges: Tensor) -> Tensor:
            return data[edges[:, 0], edges[:, 1]]
    else:
        with torch.no_grad():
            dist = pairwise_distances(data.detach().to(**cpu64), metric).numpy()

        def lengths(edges: Tensor) -> Tensor:
            return edge_lengths(data, edges, metric)
    return _engine_diagrams(dist, max_dimension, threshold, lengths, data.device)


def _per_cloud(batch: torch.Size, diagrams_of: Callable[[tuple], list[Diagram]]) -> list:
    """Nested lists mirroring the batch dimensions; a single cloud gives its list of diagrams."""
    def build(index: tuple) -> list:
        depth = len(index)
        if depth == len(batch):
            return diagrams_of(index)
        return [build(index + (i,)) for i in range(batch[depth])]
    return build(())


def rips_persistence(points: Tensor, metric: Metric = "l1", max_dimension: int = 1, *,
                     threshold: float = math.inf) -> list:
    """Vietoris-Rips persistence of clouds ``points`` (..., n, d) in dimensions 0..max_dimension.

    For one cloud (n, d) returns a list of ``max_dimension + 1`` :class:`Diagram` s indexed by
    homology dimension; for a batch, nested lists mirroring the leading dimensions
    (``result[i][j][k]`` is dimension k of cloud ``points[i, j]``; the clouds are computed one by
    one in dimension >= 1).  Edges longer than ``threshold`` never enter: the classes still alive
    there are essential.  Without a threshold the full complex is contractible, so the only
    essential class is the one of dimension 0.  Dimension 0 keeps zero-length bars (duplicate
    points); in dimension >= 1 the engine reports only classes with death > birth (in float32).
    Dimension >= 1 needs giotto-ph (``pip install 'corel[higher]'``); its cost grows quickly with n
    and max_dimension (dimension 2 is for clouds of a few hundred points).
    """
    _check_cloud(points)
    p = metric_order(metric)
    max_dimension = _check_max_dimension(max_dimension)
    threshold = _check_threshold(threshold)
    if max_dimension:
        _engine()
    h0 = h0_persistence(points, p)

    def diagrams_of(index: tuple) -> list[Diagram]:
        diagrams = [_h0_diagram(h0.deaths[index], h0.edges[index], threshold)]
        if max_dimension:
            diagrams += _higher_diagrams(points[index], p, max_dimension, threshold)
        return diagrams

    return _per_cloud(points.shape[:-2], diagrams_of)


def rips_persistence_from_distances(dist: Tensor, max_dimension: int = 1, *,
                                    threshold: float = math.inf) -> list:
    """As :func:`rips_persistence`, from symmetric distance matrices ``dist`` (..., n, n).

    Births and deaths are gathered from ``dist``, so gradients flow into it.
    """
    _check_distance_matrix(dist)
    max_dimension = _check_max_dimension(max_dimension)
    threshold = _check_threshold(threshold)
    if max_dimension:
        _engine()
    h0 = h0_persistence_from_distances(dist)

    def diagrams_of(index: tuple) -> list[Diagram]:
        diagrams = [_h0_diagram(h0.deaths[index], h0.edges[index], threshold)]
        if max_dimension:
            diagrams += _higher_diagrams(dist[index], None, max_dimension, threshold)
        return diagrams

    return _per_cloud(dist.shape[:-2], diagrams_of)


def persistence_pairs(result: Any) -> list[tuple[Tensor, Tensor]]:
    """``(finite (f, 2), essential (m,))`` per homology dimension of any single-cloud result.

    Accepts a list of :class:`Diagram` (from :func:`rips_persistence`; placed by their
    ``dimension``, missing dimensions empty), one :class:`Diagram`, a torchph-style
    ``(non_essential, essential)`` pair of lists, or an :class:`~corel.pershom.H0` of one cloud
    (all births 0, one essential class).
    """
    if isinstance(result, H0):
        deaths = result.deaths
        if deaths.ndim != 1:
            raise ValueError(f"expected the H0 of one cloud, got deaths of shape {tuple(deaths.shape)}")
        return [(torch.stack([torch.zeros_like(deaths), deaths], dim=1), deaths.new_zeros(1))]
    if isinstance(result, Diagram):
        result = [result]
    if isinstance(result, Sequence) and result and all(isinstance(d, Diagram) for d in result):
        like = result[0].pairs
        per_dimension = [(like.new_zeros(0, 2), like.new_zeros(0))] * (max(d.dimension for d in result) + 1)
        for d in result:
            per_dimension[d.dimension] = (d.pairs, d.essential)
        return per_dimension
    if (isinstance(result, Sequence) and len(result) == 2
            and all(isinstance(part, Sequence) for part in result) and len(result[0]) == len(result[1])
            and all(isinstance(t, Tensor) for part in result for t in part)):
        return [(finite, essential.reshape(-1)) for finite, essential in zip(*result)]
    raise ValueError(
        "expected a list of Diagram, a Diagram, a (non_essential, essential) pair of tensor lists "
        f"or an H0 of one cloud, got {type(result).__name__}"
    )
