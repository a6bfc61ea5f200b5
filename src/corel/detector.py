"""One-class novelty detection by counting latent neighbours (Hofer et al., ICML 2019).

A class is learned from a handful of its samples: their codes under a backbone trained once with the
connectivity loss.  A test point's score is, summed over the latent branches, the number of those
codes within ``radius`` (= eta, the scale the backbone arranged its batches at) of its own code.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils.validation import check_is_fitted
from torch import Tensor

from corel import _native
from corel.backbone import Backbone, atomic_torch_save, safe_torch_load
from corel.distances import KERNEL_METRIC, KERNEL_P, Metric, metric_order

FORMAT = "corel-one-class-detector"


def count_within(queries: Tensor, codes: Tensor, radius: float, metric: Metric = "l1", chunk_size: int = 2048) -> Tensor:
    """Per query, the number of codes within ``radius`` (boundary included), summed over branches.

    queries: (M, K, d), codes: (n, K, d), same dtype -> (M,) int64.  Distances are exact (no matmul
    expansion).  On CPU a native kernel streams the codes without building the M x n matrix; on
    other devices the distances are computed in chunks of ``chunk_size`` queries, so memory stays
    O(chunk_size * n * K) either way.
    """
    p = metric_order(metric)
    m, k, d = queries.shape
    if queries.device.type == "cpu":
        kernel_dtype = torch.float64 if queries.dtype == torch.float64 else torch.float32
        q = np.ascontiguousarray(queries.to(kernel_dtype).numpy())
        c = np.ascontiguousarray(codes.to(kernel_dtype).transpose(0, 1).numpy())  # (K, n, d)
        counts = np.empty(m, dtype=np.int64)
        _native.count_within(q, c, counts, m, k, c.shape[1], d, KERNEL_METRIC.get(p, KERNEL_P), p, float(radius),
                             kernel_dtype == torch.float64)
        return torch.from_numpy(counts)
    per_branch = codes.transpose(0, 1).contiguous()  # (K, n, d)
    out = []
    for start in range(0, m, chunk_size):
        chunk = queries[start: start + chunk_size].transpose(0, 1).contiguous()  # (K, c, d)
        dist = torch.cdist(chunk, per_branch, p=p, compute_mode="donot_use_mm_for_euclid_dist")
        out.append((dist <= radius).sum(dim=(0, 2)))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=queries.device)


class OneClassDetector(OutlierMixin, BaseEstimator):
    """Latent ball-counting one-class detector.

    Parameters
    ----------
    backbone: a trained :class:`~corel.backbone.Backbone`, the path of its file, or None when the
        inputs are already codes (N, branches, branch_dim) or (N, branches * branch_dim).
    radius: ball radius in latent ``metric`` units; None = the backbone's eta.
    metric: latent metric per branch; None = the backbone's (l1 by default).
    branches: number of latent branches when ``backbone`` is None and codes come flat (N, D).
    contamination: fraction of the training samples that ``predict`` calls outliers; sets ``offset_``.
    batch_size, chunk_size, device: encoding batch, scoring chunk (memory bound), encoding device.

    Attributes (after fit): ``codes_`` (n, branches, branch_dim) float tensor, ``offset_`` float,
    ``radius_``, ``metric_`` and ``backbone_`` (the loaded backbone or None).
    """

    def __init__(
        self,
        backbone: Backbone | str | os.PathLike | None = None,
        radius: float | None = None,
        metric: Metric | None = None,
        branches: int = 16,
        contamination: float = 0.1,
        batch_size: int = 1000,
        chunk_size: int = 2048,
        device: str | None = None,
    ):
        self.backbone = backbone
        self.radius = radius
        self.metric = metric
        self.branches = branches
        self.contamination = contamination
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.device = device

    def _resolve_backbone(self) -> Backbone | None:
        if self.backbone is None or isinstance(self.backbone, Backbone):
            return self.backbone
        return Backbone.load(self.backbone, device=self.device or "cpu")

    def _codes(self, X: np.ndarray | Tensor) -> Tensor:
        if self.backbone_ is not None:
            return self.backbone_.encode(X, batch_size=self.batch_size, device=self.device)
        codes = torch.as_tensor(X)
        if not codes.is_floating_point():
            raise ValueError(f"codes must be floating point, got {codes.dtype}")
        if codes.ndim == 2:
            if codes.shape[1] % self.branches:
                raise ValueError(f"code dimension {codes.shape[1]} does not split into {self.branches} branches")
            codes = codes.reshape(codes.shape[0], self.branches, -1)
        if codes.ndim != 3:
            raise ValueError(f"codes must have shape (N, branches, dim) or (N, D), got {tuple(codes.shape)}")
        if codes.shape[0] == 0:
            raise ValueError("no samples given (N = 0)")
        if not torch.isfinite(codes).all():
            raise ValueError("codes contain NaN or inf values")
        return codes

    def fit(self, X: np.ndarray | Tensor, y: None = None) -> "OneClassDetector":
        """Encodes the class samples X (images for a backbone, else codes) and keeps their codes."""
        if not 0 <= self.contamination < 1:
            raise ValueError(f"contamination must be in [0, 1), got {self.contamination}")
        self.backbone_ = self._resolve_backbone()
        self.radius_ = float(self.radius if self.radius is not None else (self.backbone_.eta if self.backbone_ else 2.0))
        if not self.radius_ > 0:
            raise ValueError(f"radius must be > 0, got {self.radius_}")
        self.metric_ = self.metric if self.metric is not None else (self.backbone_.metric if self.backbone_ else "l1")
        metric_order(self.metric_)
        self.codes_ = self._codes(X)
        # leave-one-out training scores: every sample finds itself once per branch
        own = count_within(self.codes_, self.codes_, self.radius_, self.metric_, self.chunk_size) - self.codes_.shape[1]
        self.offset_ = float(np.quantile(own.numpy(), self.contamination)) if self.contamination > 0 else float(own.min()) - 0.5
        return self

    def score_samples(self, X: np.ndarray | Tensor) -> np.ndarray:
        """(N,) number of class codes within radius of each sample's code, summed over branches;
        higher = more normal."""
        check_is_fitted(self, "codes_")
        codes = self._codes(X)
        if codes.shape[1:] != self.codes_.shape[1:]:
            raise ValueError(f"codes of shape {tuple(codes.shape[1:])} do not match the fitted {tuple(self.codes_.shape[1:])}")
        return count_within(codes.to(self.codes_.dtype), self.codes_, self.radius_, self.metric_, self.chunk_size).numpy()

    def decision_function(self, X: np.ndarray | Tensor) -> np.ndarray:
        """score_samples - offset_: negative for outliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X: np.ndarray | Tensor) -> np.ndarray:
        """+1 for inliers, -1 for outliers (scikit-learn's convention)."""
        return np.where(self.decision_function(X) >= 0, 1, -1)

    def save(self, path: str | os.PathLike) -> None:
        """Writes the fitted detector, backbone included, to one file (atomically)."""
        check_is_fitted(self, "codes_")
        backbone = None
        if self.backbone_ is not None:
            b = self.backbone_
            backbone = {"config": b.config.to_dict(), "state_dict": {k: v.cpu() for k, v in b.model.state_dict().items()},
                        "eta": b.eta, "metric": b.metric, "info": b.info}
        params = {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in self.get_params().items() if k != "backbone"}
        atomic_torch_save({"format": FORMAT, "params": params, "backbone": backbone, "codes": self.codes_,
                           "radius": self.radius_, "metric": self.metric_, "offset": self.offset_}, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "OneClassDetector":
        blob = safe_torch_load(path, "detector file")
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise ValueError(f"{path} is not a corel one-class detector file")
        backbone = None
        if blob["backbone"] is not None:
            from corel.models import AutoencoderConfig, BranchedAutoencoder

            b = blob["backbone"]
            model = BranchedAutoencoder(AutoencoderConfig.from_dict(b["config"]))
            model.load_state_dict(b["state_dict"])
            backbone = Backbone(model.eval(), b["eta"], b["metric"], b["info"])
        det = cls(backbone=backbone, **blob["params"])
        det.backbone_, det.codes_ = backbone, blob["codes"]
        det.radius_, det.metric_, det.offset_ = blob["radius"], blob["metric"], blob["offset"]
        return det
