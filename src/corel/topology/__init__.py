"""Topology: distances, exact H0 engines, Vietoris-Rips persistence in higher dimensions, the one
diagram type, torchph compatibility, losses on diagrams, plots and the paper's theory.

The bottom layer: it imports nothing from :mod:`corel.detection` or :mod:`corel.experiments`, and
neither scikit-learn, PIL, Lightning nor matplotlib (:mod:`corel.topology.plots` imports
matplotlib when it is imported itself).
"""

from corel.topology.diagram import H0, Diagram, as_diagrams, persistence_pairs
from corel.topology.distances import Metric, edge_lengths, metric_order, pairwise_distances
from corel.topology.h0 import h0_persistence, h0_persistence_from_distances
from corel.topology.losses import ConnectivityLoss, DiagramTargetLoss, TotalPersistence
from corel.topology.rips import rips_persistence, rips_persistence_from_distances
from corel.topology.theory import (
    batch_size_for_tolerance,
    batch_size_guideline,
    densification,
    tolerance_for_batch_size,
)

__all__ = [
    "H0", "ConnectivityLoss", "Diagram", "DiagramTargetLoss", "Metric", "TotalPersistence", "as_diagrams",
    "batch_size_for_tolerance", "batch_size_guideline", "densification", "edge_lengths", "h0_persistence",
    "h0_persistence_from_distances", "metric_order", "pairwise_distances", "persistence_pairs",
    "rips_persistence", "rips_persistence_from_distances", "tolerance_for_batch_size",
]
