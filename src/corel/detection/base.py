"""The one detector contract: every one-class detector of corel, the baselines included.

The conventions are scikit-learn's novelty detectors (``LocalOutlierFactor(novelty=True)``):
parameters are set in ``__init__`` and learned state ends in ``_``; ``fit(X)`` learns the class
from its samples and returns self; ``score_samples(X)`` is higher for more normal samples;
``offset_`` is set at fit time so that about a fraction ``contamination`` of the training samples
falls below it; ``decision_function(X) = score_samples(X) - offset_`` is negative for outliers and
``predict(X)`` gives +1 (inlier) or -1 (outlier); a score equal to ``offset_`` is an inlier.

Ties: OneClassDetector's scores are counts, so many training scores can equal the quantile, and
all of them are inliers: fewer than ``contamination`` of the training samples may be outliers
(none when that many have the lowest score; e.g. offset 0 when more than a tenth of them have no
neighbour within the radius, and then no sample at all is an outlier).  ``train_scores_`` shows the spread.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils.validation import check_is_fitted


def check_contamination(contamination: Any) -> float:
    """The expected fraction of outliers among the training samples: a number in [0, 0.5]."""
    if isinstance(contamination, bool) or not isinstance(contamination, Real) or not 0 <= contamination <= 0.5:
        raise ValueError(f"contamination must be a number in [0, 0.5], got {contamination!r}")
    return float(contamination)


def check_seed(seed: Any) -> int:
    """A seed for torch's generators: an int in [-2**63, 2**64) (numpy integers too) as a Python int;
    ValueError otherwise (a numpy seed made torch.Generator.manual_seed raise TypeError)."""
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not -2 ** 63 <= seed < 2 ** 64:
        raise ValueError(f"seed must be an int in [-2**63, 2**64), got {seed!r}")
    return int(seed)


def offset_from_scores(train_scores: np.ndarray, contamination: float) -> float:
    """The threshold below which about a fraction ``contamination`` of ``train_scores`` lies: their
    ``contamination``-quantile (linearly interpolated, as scikit-learn's; fewer lie below where
    scores tie at it), or with contamination 0 the next number below the lowest (only
    scores under every training score are outliers)."""
    if contamination > 0:
        return float(np.quantile(train_scores, contamination))
    return float(np.nextafter(np.min(train_scores), -np.inf))


class BaseDetector(OutlierMixin, BaseEstimator, ABC):
    """Base class of corel's one-class detectors.

    Subclasses implement ``_fit(X) -> (n,) training scores`` (leave-one-out where the method
    allows it, so that the training samples are scored as unseen samples would be) and
    ``_score_samples(X) -> (N,)``; their ``__init__`` stores ``contamination``.

    Attributes (after fit): ``offset_`` (float), ``train_scores_`` ((n,) the training samples'
    scores that set it), plus the subclass's learned state.
    """

    contamination: float

    def fit(self, X: Any, y: None = None) -> "BaseDetector":
        """Learns the class from its samples ``X``; ``y`` is ignored (one-class).  A fit that raises
        leaves the detector as it was: ``_fit`` sets its state piece by piece, and a refit that failed
        halfway (bad input, bad parameter) would otherwise score with the new radius or input shape
        against the old codes, network and offset."""
        before = dict(vars(self))
        try:
            contamination = check_contamination(self.contamination)
            self.train_scores_ = np.asarray(self._fit(X), dtype=np.float64)
            bad = int(np.count_nonzero(~np.isfinite(self.train_scores_)))
            if bad:  # else offset_ became NaN and predict called every sample an outlier
                raise ValueError(f"{type(self).__name__}: {bad} of the {len(self.train_scores_)} training samples' "
                                 "scores are NaN or inf; did the training diverge (learning rate)?")
            self.offset_ = offset_from_scores(self.train_scores_, contamination)
        except BaseException:
            vars(self).clear()
            vars(self).update(before)
            raise
        return self

    def fit_predict(self, X: Any, y: None = None) -> np.ndarray:
        """Fits on ``X`` and returns its samples' own predictions (+1 / -1) from the training
        scores that set ``offset_`` (about a fraction ``contamination`` of -1, fewer with ties): ``fit(X).predict(X)``
        would score each sample against itself as well (the ball counts then find every training
        sample normal)."""
        self.fit(X, y)
        return np.where(self.train_scores_ >= self.offset_, 1, -1)

    def score_samples(self, X: Any) -> np.ndarray:
        """(N,) normality scores of ``X``; higher = more normal."""
        check_is_fitted(self, "offset_")
        return self._score_samples(X)

    def decision_function(self, X: Any) -> np.ndarray:
        """(N,) ``score_samples(X) - offset_``: negative for outliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X: Any) -> np.ndarray:
        """(N,) +1 for inliers, -1 for outliers (scikit-learn's convention)."""
        return np.where(self.decision_function(X) >= 0, 1, -1)

    @abstractmethod
    def _fit(self, X: Any) -> np.ndarray:
        """Learns from ``X``; returns the (n,) scores of the training samples."""

    @abstractmethod
    def _score_samples(self, X: Any) -> np.ndarray:
        """(N,) scores of ``X``, higher = more normal."""
