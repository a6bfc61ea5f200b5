"""Baseline one-class detectors for the comparison with corel, one module each.

Every detector follows the contract of :class:`corel.detection.base.BaseDetector`, like
:class:`corel.detection.detector.OneClassDetector`: ``fit(X)`` on the class samples (images
(N, C, H, W), uint8 0..255 or float in [0, 1]) returns self, ``score_samples(X)`` gives (N,) scores,
higher = more normal, with ``offset_``, ``decision_function`` and ``predict``.  All take
``contamination``, ``seed`` and ``device``.

:data:`BASELINES` maps the names used by ``corel compare`` to the classes (called with keyword
parameters, e.g. ``BASELINES["geom"](net="small", seed=1)``).
"""

from __future__ import annotations

from typing import Callable

from corel.detection.baselines._common import BaselineDetector
from corel.detection.baselines.dagmm import DAGMM
from corel.detection.baselines.deep_svdd import DeepSVDD
from corel.detection.baselines.dsebm import DSEBM
from corel.detection.baselines.geom import GEOM
from corel.detection.baselines.ocsvm_cae import OCSVMCAE

BASELINES: dict[str, Callable[..., BaselineDetector]] = {
    "dagmm": DAGMM,
    "deep_svdd": DeepSVDD,
    "dsebm": DSEBM,
    "geom": GEOM,
    "ocsvm_cae": OCSVMCAE,
}

# cheaper settings for CPU runs: GEOM's cost is the 72 forward passes per test image, so only its
# network shrinks; the others are already cheap at n = 120
SMALL_SETTINGS: dict[str, dict] = {
    "dagmm": {},
    "deep_svdd": {},
    "dsebm": {},
    "geom": {"net": "small"},
    "ocsvm_cae": {},
}

__all__ = ["BASELINES", "SMALL_SETTINGS", "DAGMM", "DSEBM", "GEOM", "OCSVMCAE", "BaselineDetector", "DeepSVDD"]
