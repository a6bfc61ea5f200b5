"""corel: connectivity-optimized representation learning via persistent homology.

Three layers, dependencies one way (docs/architecture.md):

* :mod:`corel.topology`: a fast, exact, differentiable persistent-homology layer for PyTorch
  (torchph's API as :mod:`corel.pershom`), the connectivity loss of Hofer et al. (ICML 2019),
  diagram losses, plots and the paper's theory;
* :mod:`corel.detection`: one-class novelty detection from few samples with a backbone trained
  once, the backbone file format, the pretrained backbones and the baselines;
* :mod:`corel.experiments`: datasets, training (Lightning), the evaluation protocol, reports,
  workflows and the ``corel`` command.

``import corel`` loads the topology layer only; the other names below are imported on first use,
so that scikit-learn, PIL, Lightning and matplotlib are not loaded before they are needed.
"""

from __future__ import annotations

import importlib
from typing import Any

from corel import pershom
from corel.topology import (
    H0,
    ConnectivityLoss,
    Diagram,
    DiagramTargetLoss,
    TotalPersistence,
    as_diagrams,
    batch_size_for_tolerance,
    batch_size_guideline,
    densification,
    edge_lengths,
    h0_persistence,
    h0_persistence_from_distances,
    metric_order,
    pairwise_distances,
    persistence_pairs,
    rips_persistence,
    rips_persistence_from_distances,
    tolerance_for_batch_size,
)

__version__ = "0.3.0"

# name -> module that defines it, imported on first access (PEP 562)
_LAZY = {
    "AutoencoderConfig": "corel.detection.models",
    "Backbone": "corel.detection.backbone",
    "BaseDetector": "corel.detection.base",
    "BranchedAutoencoder": "corel.detection.models",
    "OneClassDetector": "corel.detection.detector",
    "count_within": "corel.detection.detector",
    "pretrained": "corel.detection.backbone",
    "DATASETS": "corel.experiments.datasets",
    "ImageData": "corel.experiments.datasets",
    "load_dataset": "corel.experiments.datasets",
    "load_images": "corel.experiments.datasets.image_files",
    "NoveltyModel": "corel.experiments.novelty",
    "analyze_densification": "corel.experiments.workflows",
}
_LAZY_MODULES = {"report": "corel.experiments.reports"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _LAZY_MODULES:
        value = importlib.import_module(_LAZY_MODULES[name])
    else:
        raise AttributeError(f"module 'corel' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "H0", "AutoencoderConfig", "Backbone", "BaseDetector", "BranchedAutoencoder", "ConnectivityLoss", "DATASETS",
    "Diagram", "DiagramTargetLoss", "ImageData", "NoveltyModel", "OneClassDetector", "TotalPersistence",
    "analyze_densification",
    "as_diagrams", "batch_size_for_tolerance", "batch_size_guideline", "count_within", "densification",
    "edge_lengths", "h0_persistence", "h0_persistence_from_distances", "load_dataset", "load_images", "metric_order",
    "pairwise_distances", "persistence_pairs", "pershom", "pretrained", "report", "rips_persistence",
    "rips_persistence_from_distances", "tolerance_for_batch_size",
]
