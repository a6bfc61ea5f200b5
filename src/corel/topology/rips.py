"""Vietoris-Rips persistence in every homology dimension, differentiable.

The filtration value of an edge is the full pairwise distance (as in gudhi and ripser, not half of
it); a simplex enters at its longest edge.  Dimension 0 is corel's exact H0
(:func:`corel.topology.h0.h0_persistence`).  Dimensions >= 1 come from giotto-ph's ``ripser_parallel``
(an optional AGPL-3 dependency, imported only when asked for) run on the distance matrix: for
every class the engine names the edge whose length is its birth and the edge whose length is its
death.  Births and deaths are then gathered from differentiable distances at those edges, so
autograd gives exact gradients wherever the pairing is unique (tie-free inputs).

The engine computes in float32: the pairing is the one of the float32 distances, the values are
the distances in the input's dtype at the paired edges.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from corel._checks import check_ints
from corel.topology.diagram import H0, Diagram
from corel.topology.distances import (
    Metric,
    check_distance_matrix,
    all_lengths,
    check_points,
    check_threshold,
    edge_lengths,
    metric_order,
    power_of_two_scale,
)
from corel.topology.h0 import h0_persistence, h0_persistence_from_distances

Lengths = Callable[[Tensor], Tensor]


def _engine() -> Callable[..., dict]:
    try:
        from gph import ripser_parallel
    except ImportError as err:
        raise ImportError(
            "Vietoris-Rips persistence in dimension >= 1 needs giotto-ph (AGPL-3, optional): "
            "pip install 'corel[higher]'"
        ) from err
    return ripser_parallel


def check_max_dimension(max_dimension: Any) -> int:
    check_ints(0, max_dimension=max_dimension)
    return int(max_dimension)


def _sorted_pairs(births: Tensor, deaths: Tensor, birth_edges: Tensor, death_edges: Tensor) -> tuple:
    """Orders classes by death, then birth; stable, so engine order breaks exact ties."""
    order = births.detach().argsort(stable=True)
    order = order[deaths.detach()[order].argsort(stable=True)]
    return torch.stack([births[order], deaths[order]], dim=1), birth_edges[order], death_edges[order]


def _engine_diagrams(dist: np.ndarray, max_dimension: int, inside: np.ndarray | None, lengths: Lengths,
                     device: torch.device) -> list[Diagram]:
    """Dimensions 1..max_dimension of one (n, n) float64 distance matrix, of the edges ``inside``
    the threshold ((n, n) bool; None: all)."""
    threshold = math.inf
    if inside is not None:
        # corel decides which edges enter (as dimension 0 does, on the same values); the engine,
        # which rounds to float32, gets the others as inf and a threshold between the two
        dist = np.where(inside, dist, np.inf)
        threshold = float(dist[inside].max())
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


def _engine_input(values: Tensor, threshold: float) -> tuple[np.ndarray, np.ndarray | None]:
    """What the engine reads of the lengths ``values`` (n, n): the float64 matrix divided by a power of
    two (exact) near 1, as giotto-ph works in float32, where 1e-163 or 1e150 would come out 0 or inf,
    and which edges lie inside ``threshold`` ((n, n) bool, exact, as in dimension 0; None: all).

    The diagonal is ignored, as in dimension 0: giotto-ph would read it as vertex births (a nonzero
    one paired classes with death edges shorter than their births).  Under ``torch.func.grad`` and
    ``jacrev`` the values are unwrapped and read with the transforms off (a wrapped tensor refuses
    to be read on the host); under ``vmap`` a ValueError."""
    functorch = torch._C._functorch
    with torch._C._DisableFuncTorch():
        while functorch.is_functorch_wrapped_tensor(values):
            if functorch.is_batchedtensor(values):  # unwrapped, the whole batch would read as one matrix
                raise ValueError("persistence in dimension >= 1 cannot run under vmap (each cloud's diagrams "
                                 "have their own sizes): pass the clouds as a batch (..., n, d)")
            values = functorch.get_unwrapped(values)
        values = values.to(device="cpu", dtype=torch.float64)
        values = torch.where(torch.eye(values.shape[0], dtype=torch.bool), 0.0, values)
        inside = None if threshold == math.inf else (values <= threshold).numpy()
        scale = float(power_of_two_scale(values[None, :, :])[0])
        return (values / scale).numpy(), inside


def higher_diagrams(data: Tensor, metric: Metric | None, max_dimension: int,
                     threshold: float) -> list[Diagram]:
    """Dimensions 1..max_dimension of one cloud (n, d) under ``metric``, or of one distance matrix
    (n, n) when ``metric`` is None."""
    if metric is None:
        def lengths(edges: Tensor) -> Tensor:
            return data[edges[:, 0], edges[:, 1]]

        values = data.detach()
    else:
        def lengths(edges: Tensor) -> Tensor:
            return edge_lengths(data, edges, metric)

        values = all_lengths(data, metric)  # the values births and deaths are gathered from
    dist, inside = _engine_input(values, threshold)
    return _engine_diagrams(dist, max_dimension, inside, lengths, data.device)


def _per_cloud(batch: torch.Size, diagrams_of: Callable[[tuple], list[Diagram]]) -> list:
    """Nested lists mirroring the batch dimensions; a single cloud gives its list of diagrams."""
    def build(index: tuple) -> list:
        depth = len(index)
        if depth == len(batch):
            return diagrams_of(index)
        return [build(index + (i,)) for i in range(batch[depth])]
    return build(())


def _diagrams(h0: H0, data: Tensor, p: float | None, max_dimension: int, threshold: float) -> list:
    """Per cloud of ``data`` (..., n, d) points, or distance matrices when ``p`` is None: the H0
    diagram from ``h0`` and, up to ``max_dimension``, the higher ones, nested like the batch."""
    def diagrams_of(index: tuple) -> list[Diagram]:
        diagrams = [H0(h0.deaths[index], h0.edges[index]).diagram(threshold)]
        if max_dimension:
            diagrams += higher_diagrams(data[index], p, max_dimension, threshold)
        return diagrams

    return _per_cloud(data.shape[:-2], diagrams_of)


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
    check_points(points)
    p = metric_order(metric)
    max_dimension = check_max_dimension(max_dimension)
    threshold = check_threshold(threshold)
    if max_dimension:
        _engine()
    return _diagrams(h0_persistence(points, p), points, p, max_dimension, threshold)


def rips_persistence_from_distances(dist: Tensor, max_dimension: int = 1, *,
                                    threshold: float = math.inf) -> list:
    """As :func:`rips_persistence`, from symmetric distance matrices ``dist`` (..., n, n).

    Births and deaths are gathered from ``dist``, so gradients flow into it.
    """
    check_distance_matrix(dist)
    max_dimension = check_max_dimension(max_dimension)
    threshold = check_threshold(threshold)
    if max_dimension:
        _engine()
    return _diagrams(h0_persistence_from_distances(dist), dist, None, max_dimension, threshold)
