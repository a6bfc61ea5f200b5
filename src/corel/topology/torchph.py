"""Drop-in replacements for torchph's Vietoris-Rips functions (``torchph.pershom``).

``vr_persistence_l1(points, max_dimension, max_ball_diameter)`` and
``vr_persistence(distance_matrix, ...)`` return what torchph returns: ``(non_essential, essential)``,
lists indexed by homology dimension, ``non_essential[k]`` a (f, 2) tensor of (birth, death) rows
and ``essential[k]`` a 1-D (m,) tensor of births.  ``vr_persistence_l2`` is corel's addition.
torchph's four boundary-matrix functions (``find_merge_pairings``, ``merge_columns_``,
``read_barcodes``, ``calculate_persistence``) are not part of corel.  Deliberate differences
(docs/persistence.md): ``max_dimension`` is the highest *homology* dimension; every device works.
Zero-length bars are dropped as torchph drops them (``drop_zero_bars=False`` keeps those of
dimension 0, as corel's own API does); ``max_ball_diameter`` is rounded to the points' dtype, as
torchph compares in it, and bounds every dimension alike.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor

from corel.topology.diagram import H0
from corel._checks import plain_number
from corel.topology.distances import Metric
from corel.topology.h0 import h0_persistence, h0_persistence_from_distances
from corel.topology.rips import check_max_dimension, higher_diagrams

Barcodes = tuple[list[Tensor], list[Tensor]]


def _torchph_result(h0: H0, max_dimension: int, max_ball_diameter: float, drop_zero_bars: bool,
                    data: Tensor, metric: Metric | None) -> Barcodes:
    """Dimension 0 from ``h0``; dimensions 1..max_dimension of ``data``, a cloud under ``metric``
    or a distance matrix when ``metric`` is None."""
    max_dimension = check_max_dimension(max_dimension)
    if h0.deaths.ndim != 1:
        raise ValueError("torchph-style functions take one cloud (n, d); use h0_persistence for batches")
    max_ball_diameter = plain_number(max_ball_diameter)
    if isinstance(max_ball_diameter, bool) or not isinstance(max_ball_diameter, Real) or not max_ball_diameter >= 0:
        raise ValueError(f"max_ball_diameter must be a number >= 0 (0: no limit), got {max_ball_diameter!r}")
    deaths = h0.deaths
    limited = max_ball_diameter > 0  # before rounding: a tiny bound may round to 0, which is no limit
    # torchph compares in the points' dtype: the bound rounded to it, then every dimension alike
    max_ball_diameter = float(torch.tensor(float(max_ball_diameter), dtype=deaths.dtype))
    keep = torch.ones_like(deaths, dtype=torch.bool)
    if limited:
        keep &= deaths.double() <= max_ball_diameter
    essential_count = 1 + int((~keep).sum())
    if drop_zero_bars:
        keep &= deaths > 0
    kept = deaths[keep]
    non_essential = [torch.stack([torch.zeros_like(kept), kept], dim=1)]
    essential = [deaths.new_zeros(essential_count)]
    if max_dimension >= 1:
        threshold = max_ball_diameter if limited else math.inf
        for diagram in higher_diagrams(data, metric, max_dimension, threshold):
            non_essential.append(diagram.pairs)
            essential.append(diagram.essential)
    return non_essential, essential


def vr_persistence_l1(point_cloud: Tensor, max_dimension: int, max_ball_diameter: float = 0.0, *,
                      drop_zero_bars: bool = True) -> Barcodes:
    """torchph-compatible Vietoris-Rips persistence of ``point_cloud`` (n, d) under l1.

    Returns ``(non_essential, essential)``, lists indexed by homology dimension 0..max_dimension:
    ``non_essential[k]`` a (f, 2) tensor of (birth, death) rows, ascending by death,
    ``essential[k]`` a (m,) tensor of the births of the classes that never die.  Edges longer
    than ``max_ball_diameter`` are ignored when it is > 0 (as in torchph), which leaves classes
    alive: one more essential class of dimension 0 per ignored tree edge, and essential classes
    of dimension >= 1; without it the only essential class is the one of dimension 0.

    Differences from torchph: ``max_dimension`` is the highest *homology* dimension, computed
    with its true Vietoris-Rips semantics (triangles are built for dimension 1, so its finite
    bars are there); torchph's ``max_dimension`` counts simplex dimension, so there
    ``max_dimension=1`` builds no triangles and every 1-cycle is reported as essential.  Zero-length
    bars of dimension 0 (duplicate points) are dropped as in torchph; ``drop_zero_bars=False`` keeps
    them (dimension >= 1 never has them).  Dimension >= 1 needs giotto-ph
    (``pip install 'corel[higher]'``), see :mod:`corel.topology.rips`.
    """
    h0 = h0_persistence(point_cloud, "l1")
    return _torchph_result(h0, max_dimension, max_ball_diameter, drop_zero_bars, point_cloud, "l1")


def vr_persistence_l2(point_cloud: Tensor, max_dimension: int, max_ball_diameter: float = 0.0, *,
                      drop_zero_bars: bool = True) -> Barcodes:
    """As :func:`vr_persistence_l1`, under the Euclidean (l2) metric (torchph has no such function)."""
    h0 = h0_persistence(point_cloud, "l2")
    return _torchph_result(h0, max_dimension, max_ball_diameter, drop_zero_bars, point_cloud, "l2")


def vr_persistence(distance_matrix: Tensor, max_dimension: int, max_ball_diameter: float = 0.0, *,
                   drop_zero_bars: bool = True) -> Barcodes:
    """As :func:`vr_persistence_l1`, from an (n, n) distance matrix, of which, as in torchph, only
    the part below the diagonal is read: it need not be symmetric.  Differentiable in those entries."""
    if not isinstance(distance_matrix, Tensor) or distance_matrix.ndim != 2 \
            or distance_matrix.shape[0] != distance_matrix.shape[1]:
        raise ValueError("distance_matrix must be a square (n, n) torch.Tensor, got "
                         + (f"shape {tuple(distance_matrix.shape)}" if isinstance(distance_matrix, Tensor)
                            else type(distance_matrix).__name__))
    lower = distance_matrix.tril(-1)
    symmetric = lower + lower.T
    h0 = h0_persistence_from_distances(symmetric)
    return _torchph_result(h0, max_dimension, max_ball_diameter, drop_zero_bars, symmetric, None)
