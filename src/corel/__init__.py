"""corel: connectivity-optimized representation learning via persistent homology.

A fast, differentiable persistent-homology layer for PyTorch (:mod:`corel.pershom`), the
connectivity loss of Hofer et al. (ICML 2019), and one-class novelty detection from few samples.  Training (Lightning) lives in :mod:`corel.training`,
the evaluation protocols in :mod:`corel.protocol`, plots in :mod:`corel.plots` and the baselines in
:mod:`corel.baselines`; they are imported on demand because of their heavier dependencies.
"""

from corel import pershom
from corel.backbone import Backbone
from corel.datasets import DATASETS, ImageData, load_dataset
from corel.detector import OneClassDetector, count_within
from corel.distances import edge_lengths, metric_order, pairwise_distances
from corel.losses import ConnectivityLoss, DiagramTargetLoss, TotalPersistence
from corel.models import AutoencoderConfig, BranchedAutoencoder
from corel.pershom import H0, h0_persistence, h0_persistence_from_distances
from corel.rips import Diagram, persistence_pairs, rips_persistence, rips_persistence_from_distances
from corel.theory import (
    analyze_densification,
    batch_size_for_tolerance,
    batch_size_guideline,
    densification,
    tolerance_for_batch_size,
)

__version__ = "0.1.0"

__all__ = [
    "H0",
    "AutoencoderConfig",
    "Backbone",
    "BranchedAutoencoder",
    "ConnectivityLoss",
    "DATASETS",
    "Diagram",
    "DiagramTargetLoss",
    "ImageData",
    "OneClassDetector",
    "TotalPersistence",
    "analyze_densification",
    "batch_size_for_tolerance",
    "batch_size_guideline",
    "count_within",
    "densification",
    "edge_lengths",
    "h0_persistence",
    "h0_persistence_from_distances",
    "load_dataset",
    "metric_order",
    "pairwise_distances",
    "persistence_pairs",
    "pershom",
    "rips_persistence",
    "rips_persistence_from_distances",
    "tolerance_for_batch_size",
]
