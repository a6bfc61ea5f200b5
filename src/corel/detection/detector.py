"""One-class novelty detection by counting latent neighbours (Hofer et al., ICML 2019).

A class is learned from a handful of its samples: their codes under a backbone trained once with the
connectivity loss.  A test point's score is, summed over the latent branches, the number of those
codes within ``radius`` (= eta, the scale the backbone arranged its batches at) of its own code.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import Tensor

from corel._checks import check_ints, check_number
from corel._io import load_checked, save_checked
from corel._native._kernels import count_within as native_count_within
from corel.detection.backbone import Backbone, resolve_backbone
from corel.detection.base import BaseDetector
from corel.topology.distances import (
    Metric,
    check_finite,
    check_scale,
    compared_pairwise,
    measured_in,
    metric_name,
    metric_order,
    padded_width,
)

FORMAT = "corel-one-class-detector"
VERSION = 2


def count_within(queries: Tensor, codes: Tensor, radius: float, metric: Metric = "l1", chunk_size: int = 2048) -> Tensor:
    """Per query, the number of codes within ``radius`` (a number >= 0, boundary included), summed
    over branches; ValueError for NaN or inf coordinates.

    queries: (M, K, d), codes: (n, K, d) -> (M,) int64, counted in float64 if either is float64,
    else float32, on the queries' device; other shapes raise ValueError.  Distances are exact (no matmul
    expansion) and compared as the H0 engines compare them (l1 and squared l2 summed in corel's
    fixed order, :func:`~corel.topology.distances.compared_pairwise`), so a code exactly at the
    radius counts alike on every device; l2 at radii whose square leaves the dtype is counted on
    rescaled inputs (:func:`_squares_in_range`).  On CPU a native kernel streams the codes
    without building the M x n matrix; on other devices at most ``chunk_size`` queries at a
    time, fewer where their differences to the codes would exceed TILE_ELEMENTS entries.
    """
    p = metric_order(metric)
    check_ints(1, chunk_size=chunk_size)
    for name, x in (("queries", queries), ("codes", codes)):
        if not isinstance(x, Tensor) or x.ndim != 3 or x.is_complex():
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a real tensor (N, branches, dim), got {shape}")
    if queries.shape[1:] != codes.shape[1:]:  # the native kernel read codes of another layout as if they fit
        raise ValueError(f"queries (M, {', '.join(map(str, queries.shape[1:]))}) and codes "
                         f"(n, {', '.join(map(str, codes.shape[1:]))}) differ in branches or dimension")
    if isinstance(radius, Tensor) and radius.numel() == 1:
        radius = radius.item()
    radius = check_number(radius, "radius")
    check_finite(queries, "queries")  # a NaN coordinate has no distance (the kernels' maxima would skip it)
    check_finite(codes, "codes")
    queries, codes = measured_in(queries), measured_in(codes)  # the dtypes the native kernel counts in
    # one dtype for both: the kernel read the codes in the queries' dtype, rounding float64 codes
    dtype = torch.promote_types(queries.dtype, codes.dtype)
    queries, codes = queries.to(dtype), codes.to(queries.device, dtype)
    if p == 2.0:
        queries, codes, radius = _squares_in_range(queries, codes, float(radius))
    if queries.device.type == "cpu":
        return native_count_within(queries, codes.transpose(0, 1), radius, p)
    return count_in_tiles(queries, codes, radius, p, chunk_size)


def _squares_in_range(queries: Tensor, codes: Tensor, radius: float) -> tuple[Tensor, Tensor, float]:
    """l2 counts compare squared sums with the radius squared.  Where that square would leave the
    dtype (a float32 radius beyond 2**+-32: at 2**100 every code counted, inf <= inf), queries,
    codes and radius are divided by the radius's power of two (exact), so the sums that decide,
    those of differences near the radius, are in range; farther ones may overflow to inf and
    nearer ones underflow to 0, each on its right side of the radius.  Only then, and not where
    a coordinate would overflow: a global scale taken from the coordinates instead lost the
    bits of small codes next to one huge code."""
    info = torch.finfo(queries.dtype)
    bound = info.max ** 0.25
    if radius == 0 or 1 / bound <= radius <= bound:
        return queries, codes, radius
    scale = math.ldexp(1.0, math.frexp(radius)[1] - 1)  # the radius becomes 1 <= . < 2
    if scale < 1:  # coordinates grow: not past the dtype
        top = max(float(t.abs().amax()) if t.numel() else 0.0 for t in (queries, codes))
        if scale < info.tiny or top / scale >= info.max / 4:
            return queries, codes, radius
    return queries / scale, codes / scale, radius / scale


# Differences (queries x codes x coordinates, rounded up to the fixed order's multiple of 8) in one
# tile of count_in_tiles; about three such temporaries are alive at once.
TILE_ELEMENTS = 1 << 24


def count_in_tiles(queries: Tensor, codes: Tensor, radius: float, p: float, chunk_size: int = 2048) -> Tensor:
    """:func:`count_within` of float32 or float64 ``queries`` and ``codes`` in torch operations on
    any device, in tiles of queries; unscaled."""
    per_branch = codes.transpose(0, 1).contiguous()  # (K, n, d)
    threshold = radius * radius if p == 2.0 else radius  # in the compared units; rounded to the dtype as in C
    k, n, d = per_branch.shape
    rows = max(1, min(chunk_size, TILE_ELEMENTS // max(1, k * n * padded_width(d))))
    out = [torch.zeros(0, dtype=torch.long, device=queries.device)]
    for start in range(0, queries.shape[0], rows):
        chunk = queries[start: start + rows].transpose(0, 1)  # (K, c, d)
        out.append((compared_pairwise(chunk, per_branch, p) <= threshold).sum(dim=(0, 2)))
    return torch.cat(out)


class OneClassDetector(BaseDetector):
    """Latent ball-counting one-class detector.

    Parameters
    ----------
    backbone : Backbone, str, path or None, default "cifar10"
        The encoder: a :class:`~corel.detection.backbone.Backbone`, the name of a backbone that
        ships with corel (:func:`~corel.detection.backbone.pretrained`), the path of a backbone
        file, or None when the inputs are already codes (N, branches, branch_dim) or
        (N, branches * branch_dim).
    radius : float, optional
        Ball radius in latent ``metric`` units; None = the backbone's eta (2.0 for codes).
    metric : str or float, optional
        Latent metric per branch; None = the backbone's (l1 for codes).
    branches : int, default 16
        Number of latent branches when ``backbone`` is None and codes come flat (N, D).
    contamination : float, default 0.1
        Expected fraction of outliers among the training samples, in [0, 0.5]: ``offset_`` is that
        quantile of the training samples' leave-one-out scores (each sample scored against the
        others), as ``LocalOutlierFactor(novelty=True)`` does with a float contamination.
    batch_size, chunk_size : int
        Images per encoding batch; queries per scoring chunk off the CPU (memory bounds).
    device : str, optional
        Where the backbone encodes (default: where it is); its model moves there.

    Attributes
    ----------
    codes_ : Tensor (n, branches, branch_dim)
        The class samples' codes.
    offset_ : float
        Threshold of ``decision_function``.
    radius_, metric_ : float, str or float
        The radius and metric in use.
    backbone_ : Backbone or None
        The loaded backbone.
    """

    def __init__(
        self,
        backbone: Backbone | str | os.PathLike | None = "cifar10",
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

    def _codes(self, X: Any, branches: int) -> Tensor:
        """Codes (N, branches, dim) of X: images encoded by the backbone, or codes as given, flat
        ones (N, D) split into ``branches``."""
        if self.backbone_ is not None:
            codes = self.backbone_.encode(X, batch_size=self.batch_size, device=self.device)
            # else count_within blamed the "queries"; NaN codes come from the weights (a diverged training)
            check_finite(codes, "the backbone's encoding of these images")
            return codes
        if not isinstance(X, (np.ndarray, Tensor)):
            raise ValueError(f"codes must be a numpy array or a torch tensor, got {type(X).__name__}")
        codes = torch.as_tensor(X).detach()  # codes_ must not keep the caller's autograd graph alive
        if not codes.is_floating_point():
            raise ValueError(f"codes must be floating point, got {codes.dtype}")
        if codes.ndim not in (2, 3):
            raise ValueError(f"codes must have shape (N, branches, dim) or (N, D), got {tuple(codes.shape)}")
        if codes.shape[0] == 0:
            raise ValueError("no codes given (N = 0)")
        if codes.ndim == 2:
            if codes.shape[1] % branches:
                raise ValueError(f"code dimension {codes.shape[1]} does not split into {branches} branches")
            codes = codes.reshape(codes.shape[0], branches, -1)
        check_finite(codes, "codes")
        return codes

    def _fit(self, X: Any) -> np.ndarray:
        """Encodes the class samples X (images for a backbone, else codes) and keeps their codes."""
        check_ints(1, branches=self.branches, batch_size=self.batch_size, chunk_size=self.chunk_size)
        self.backbone_ = None if self.backbone is None else resolve_backbone(self.backbone, self.device or "cpu")
        default_radius = self.backbone_.eta if self.backbone_ is not None else 2.0
        self.radius_ = check_scale(self.radius if self.radius is not None else default_radius, "radius")
        default_metric = self.backbone_.metric if self.backbone_ is not None else "l1"
        self.metric_ = metric_name(self.metric if self.metric is not None else default_metric)
        self.codes_ = self._codes(X, self.branches)
        return self._leave_one_out_scores()

    def _leave_one_out_scores(self) -> np.ndarray:
        """(n,) the class codes' scores against the others: every code finds itself once per branch."""
        own = count_within(self.codes_, self.codes_, self.radius_, self.metric_, self.chunk_size) - self.codes_.shape[1]
        return own.cpu().numpy().astype(np.float64)

    def _score_samples(self, X: Any) -> np.ndarray:
        """(N,) number of class codes within radius of each sample's code, summed over branches;
        higher = more normal.  Flat codes split into the fitted branches."""
        codes = self._codes(X, self.codes_.shape[1])
        if codes.shape[1:] != self.codes_.shape[1:]:
            raise ValueError(f"codes of shape {tuple(codes.shape[1:])} do not match the fitted {tuple(self.codes_.shape[1:])}")
        # counted where the class codes are (a GPU), in the wider of the two dtypes
        return count_within(codes.to(self.codes_.device), self.codes_, self.radius_, self.metric_,
                            self.chunk_size).cpu().numpy()

    def to_dict(self) -> dict[str, Any]:
        """The fitted detector as plain types and CPU tensors, backbone included; without its
        ``device``, which says where this process computes (a file fitted on a GPU is scored anywhere)."""
        check_is_fitted(self, "codes_")
        params = {k: v for k, v in self.get_params().items() if k != "backbone"} | {"device": None}
        return {"params": params, "backbone": None if self.backbone_ is None else self.backbone_.to_dict(),
                "codes": self.codes_.cpu(), "radius": self.radius_, "metric": self.metric_, "offset": self.offset_,
                "train_scores": torch.from_numpy(self.train_scores_)}

    @classmethod
    def from_dict(cls, content: dict[str, Any], where: str = "detector", device: str | None = None) -> "OneClassDetector":
        """The inverse of :meth:`to_dict`, validated: ValueError naming ``where`` for bad content.
        ``device``: where the backbone encodes (default: the CPU); the counts run where the codes are, on
        the CPU.  ``train_scores_`` is read (recomputed for files written before it was stored)."""
        try:
            backbone = None if content["backbone"] is None else Backbone.from_dict(content["backbone"], where=where)
            det = cls(backbone=backbone, **{**content["params"], "device": device})
            codes, radius, offset, metric = content["codes"], content["radius"], content["offset"], content["metric"]
        except (KeyError, TypeError) as e:
            raise ValueError(f"{where} is not a valid detector file ({type(e).__name__}: {e})") from e
        try:
            metric = metric_name(metric)
        except ValueError as e:
            raise ValueError(f"{where}: the detector's metric: {e}") from e
        if not isinstance(codes, Tensor) or codes.ndim != 3 or codes.shape[0] == 0 or not codes.is_floating_point() \
                or not torch.isfinite(codes).all():
            raise ValueError(f"{where}: the detector's codes must be a finite (n, branches, dim) tensor")
        if backbone is not None and tuple(codes.shape[1:]) != (backbone.config.branches, backbone.config.branch_dim):
            raise ValueError(f"{where}: codes of shape {tuple(codes.shape[1:])} do not match the backbone")
        if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not np.isfinite(offset):
            raise ValueError(f"{where}: the detector's offset must be a finite number, got {offset!r}")
        det.backbone_, det.codes_, det.metric_, det.offset_ = backbone, codes, metric, float(offset)
        det.radius_ = check_scale(radius, f"{where}: the detector's radius")
        scores = content.get("train_scores")
        if scores is None:  # an earlier file: O(n^2) counts once, where reading them costs nothing
            det.train_scores_ = det._leave_one_out_scores()
        elif isinstance(scores, Tensor) and scores.shape == codes.shape[:1] and scores.is_floating_point() \
                and bool(torch.isfinite(scores).all()):
            det.train_scores_ = scores.double().numpy()
        else:
            raise ValueError(f"{where}: the detector's train_scores must be finite, one per code")
        return det

    def save(self, path: str | os.PathLike) -> None:
        """Writes the fitted detector, backbone included, to one file (atomically, with a checksum)."""
        save_checked(self.to_dict(), path, format=FORMAT, version=VERSION)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None) -> "OneClassDetector":
        """Reads a file written by :meth:`save`, its backbone to encode on ``device`` (default: the CPU);
        a damaged, foreign or invalid file raises ValueError."""
        return cls.from_dict(load_checked(path, format=FORMAT, version=VERSION, what="corel one-class detector file"),
                             where=str(path), device=device)
