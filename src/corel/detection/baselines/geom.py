"""GEOM / ADT (Golan & El-Yaniv, NeurIPS 2018): a classifier learns which of 72 geometric
transformations was applied to a class sample; normal images are those whose transformations it
recognises with the confidence it had on the class samples."""

from __future__ import annotations

import itertools
import math
import re
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import digamma, gammaln, polygamma
from torch import Tensor, nn

from corel._checks import check_ints
from corel.detection.baselines._common import (BaselineDetector, check_non_negative, check_positive, in_batches,
                                                  train)


class Transformation(NamedTuple):
    """Horizontal flip, then a translation by ``tx`` columns (right) and ``ty`` rows (down) in units of
    the shift, then ``rotations`` counter-clockwise quarter turns."""

    flip: bool
    tx: int
    ty: int
    rotations: int


# the published order: flip x tx x ty x rotation, 2 * 3 * 3 * 4 = 72
TRANSFORMATIONS = tuple(Transformation(f, tx, ty, k)
                        for f, tx, ty, k in itertools.product((False, True), (0, -1, 1), (0, -1, 1), range(4)))
_TABLE = torch.tensor(TRANSFORMATIONS, dtype=torch.long)  # (72, 4)


def _reflected(length: int, shifts: Tensor) -> Tensor:
    """(B,) shifts -> (B, length) source indices of a shifted axis; outside the image the source is
    mirrored about the border pixel (scipy's mode "reflect": ... b a | a b c ... z | z y ...)."""
    src = torch.arange(length, device=shifts.device)[None] - shifts[:, None]
    src = torch.where(src < 0, -src - 1, src)
    return torch.where(src >= length, 2 * length - src - 1, src)


def translate(x: Tensor, tx: Tensor, ty: Tensor) -> Tensor:
    """Shifts each image of x (B, C, H, W) right by tx[b] and down by ty[b] pixels (|shift| <= side),
    filling with the reflected border as the reference code does."""
    b, _, h, w = x.shape
    rows, cols = _reflected(h, ty), _reflected(w, tx)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return x[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)


def transform(x: Tensor, t: Tensor, shift: int = 8) -> Tensor:
    """Applies transformation t[b] (an index into :data:`TRANSFORMATIONS`) to image x[b];
    x (B, C, S, S) square, translations by ``shift`` pixels."""
    flip, tx, ty, k = _TABLE.to(x.device)[t].T
    x = torch.where(flip.bool()[:, None, None, None], x.flip(-1), x)
    x = translate(x, tx * shift, ty * shift)
    out = torch.empty_like(x)
    for quarter_turns in range(4):
        sel = k == quarter_turns
        out[sel] = torch.rot90(x[sel], quarter_turns, dims=(-2, -1))
    return out


def transform_all(x: Tensor, shift: int = 8) -> Tensor:
    """(N, C, S, S) -> (N, 72, C, S, S): every transformation of every image."""
    n, t = len(x), len(TRANSFORMATIONS)
    ts = torch.arange(t, device=x.device).repeat(n)
    return transform(x.repeat_interleave(t, dim=0), ts, shift).reshape(n, t, *x.shape[1:])


class _WideBlock(nn.Module):
    """Pre-activation residual block: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3, plus the input, or a
    1x1 convolution of the pre-activated input when the channel count changes."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if c_in != c_out else None

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-depth-k (Zagoruyko & Komodakis, 2016) as in the reference code: a 3x3 convolution to 16
    channels, three groups of (depth - 4) / 6 blocks of 16k, 32k, 64k channels (strides 1, 2, 2),
    BN-ReLU, global average pooling, a dense layer to ``classes`` logits.  (B, C, H, W) -> (B, classes)."""

    def __init__(self, in_channels: int, classes: int, depth: int = 10, widen_factor: int = 4):
        super().__init__()
        if depth < 10 or (depth - 4) % 6 or widen_factor < 1:
            raise ValueError(f"a WRN needs depth = 6n + 4 >= 10 and widen factor >= 1, got {depth}-{widen_factor}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)]
        for g, stride in enumerate((1, 2, 2)):
            layers += [_WideBlock(widths[g] if i == 0 else widths[g + 1], widths[g + 1], stride if i == 0 else 1)
                       for i in range(n)]
        layers += [nn.BatchNorm2d(widths[-1]), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(widths[-1], classes)
        for m in self.modules():  # the reference initialisation: He-normal convolutions, uniform dense
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        bound = 1 / math.sqrt(widths[-1])
        nn.init.uniform_(self.classifier.weight, -bound, bound)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


NETWORKS = {"small": (10, 1)}  # names besides "wrn-<depth>-<k>"


def parse_network(name: str) -> tuple[int, int]:
    """'wrn-10-4' -> (10, 4); 'small' -> WRN-10-1 (about 1/16 of WRN-10-4's multiply-adds)."""
    if name in NETWORKS:
        return NETWORKS[name]
    match = re.fullmatch(r"wrn-(\d+)-(\d+)", name)
    if match is None:
        raise ValueError(f"unknown network {name!r}: use 'wrn-<depth>-<widen factor>' (e.g. 'wrn-10-4') or 'small'")
    return int(match[1]), int(match[2])


def fit_dirichlet(log_p: np.ndarray, max_iter: int = 100, tol: float = 1e-10) -> np.ndarray:
    """Maximum-likelihood Dirichlet concentrations of probability vectors given by their logs.

    log_p (N, ..., K) -> alpha (..., K): one independent fit per index of the middle axes.  Newton's
    method on the log-likelihood (concave in alpha; Minka, "Estimating a Dirichlet distribution",
    2000: the Hessian is diagonal plus rank one), steps halved where they would leave alpha > 0,
    started from Minka's moment-based estimate.
    """
    mean_log = log_p.mean(axis=0)
    m = np.exp(log_p).mean(axis=0)
    m /= m.sum(axis=-1, keepdims=True)
    # initial precision; the spread term is >= 0 by Jensen, 0 only when all samples are identical
    spread = np.maximum(np.sum(m * (np.log(m) - mean_log), axis=-1, keepdims=True), 1e-12)
    alpha = (m.shape[-1] - 1) / (2 * spread) * m
    for _ in range(max_iter):
        total = alpha.sum(axis=-1, keepdims=True)
        gradient = digamma(total) - digamma(alpha) + mean_log  # per sample
        q = -polygamma(1, alpha)  # Hessian = diag(q) + polygamma(1, total) * ones
        with np.errstate(divide="ignore", invalid="ignore"):
            b = (gradient / q).sum(axis=-1, keepdims=True) / (1 / polygamma(1, total) + (1 / q).sum(axis=-1, keepdims=True))
            step = (gradient - b) / q
        # samples without spread have no maximum (alpha -> infinity): such a fit keeps its estimate
        step = np.where(np.isfinite(step).all(axis=-1, keepdims=True), step, 0.0)
        for _ in range(64):  # keep alpha positive: halve the step of the fits that would leave
            outside = (alpha - step <= 0).any(axis=-1, keepdims=True)
            if not outside.any():
                break
            step = np.where(outside, step / 2, step)
        alpha = alpha - step
        if np.max(np.abs(step) / alpha) < tol:
            break
    return alpha


def _network_input(x: Tensor) -> Tensor:
    """[0, 1] images -> [-1, 1] (the reference's range), channels-last like the network."""
    return (x * 2 - 1).contiguous(memory_format=torch.channels_last)


class GEOM(BaselineDetector):
    """The transformation classifier of Golan & El-Yaniv.

    Training: every class sample under all 72 :data:`TRANSFORMATIONS` (translations by ``shift``
    pixels; None = a quarter of the image side, the published 8 for 32x32 and 16 for 64x64), labelled by the transformation, images scaled to [-1, 1]; cross-entropy, Adam(``lr``) with
    L2 weight decay ``weight_decay`` on all parameters, batch 128, ``epochs`` passes over the 72 n
    transformed samples (the reference: ceil(200 / 72) = 3).
    Network ``net``: "wrn-10-4", the reference code's WRN for 32x32 data (CIFAR-10, Fashion-MNIST;
    it used WRN-16-8 for 64x64 cats-vs-dogs), any "wrn-<depth>-<k>", or "small" (WRN-10-1) for CPUs.

    Score ``score``: "dirichlet" (the paper's): per transformation t, a Dirichlet is fitted by maximum
    likelihood to the softmax outputs on the t-transformed class samples; the score is the sum over t of
    the Dirichlet log-likelihood of the test image's softmax output under t.  "simple": the sum over t
    of the log-probability the classifier gives the correct transformation t.  Higher = more normal.
    Images must be square (quarter turns).
    """

    def __init__(
        self,
        net: str = "wrn-10-4",
        epochs: int = 3,
        batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 5e-4,
        shift: int | None = None,
        score: str = "dirichlet",
        contamination: float = 0.1,
        seed: int = 0,
        device: str = "cpu",
        verbose: bool = False,
    ):
        self.net = net
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.shift = shift
        self.score = score
        self.contamination = contamination
        self.seed = seed
        self.device = device
        self.verbose = verbose

    def _train(self, images: Tensor) -> None:
        check_ints(1, epochs=self.epochs)
        check_positive(lr=self.lr)
        if self.score not in ("dirichlet", "simple"):
            raise ValueError(f"score must be 'dirichlet' or 'simple', got {self.score!r}")
        self.score_ = self.score  # fixed at fit: the Dirichlet fit below exists only for "dirichlet"
        channels, height, width = self.input_shape_
        if height != width:
            raise ValueError(f"GEOM rotates by quarter turns and needs square images, got {height}x{width}")
        self.shift_ = height // 4 if self.shift is None else self.shift
        check_ints(0, shift=self.shift_)
        if not self.shift_ < height:
            raise ValueError(f"shift must be in [0, {height}) for {height}x{width} images, got {self.shift_}")
        check_non_negative(weight_decay=self.weight_decay)
        depth, widen_factor = parse_network(self.net)
        # channels-last convolutions: 1.2-2x faster on CPU (oneDNN), the same results up to rounding
        self.network_ = WideResNet(channels, len(TRANSFORMATIONS), depth, widen_factor).to(
            self.device_, memory_format=torch.channels_last)
        data = images.to(self.device_)
        t_count = len(TRANSFORMATIONS)

        def loss(pairs: Tensor) -> Tensor:  # pairs index (image, transformation) as image * 72 + t
            t = pairs % t_count
            x = transform(data[pairs // t_count], t, self.shift_)
            return F.cross_entropy(self.network_(_network_input(x)), t)

        generator = torch.Generator().manual_seed(self.seed_)
        optimizer = torch.optim.Adam(self.network_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        train(self.network_, loss, torch.arange(len(images) * t_count, device=self.device_), optimizer, self.epochs,
              self.batch_size, generator, verbose=self.verbose, name="GEOM")
        self.network_.eval()
        if self.score_ == "dirichlet":
            self.alpha_ = fit_dirichlet(self._log_probs(images).double().numpy())  # (72 transformations, 72)
            self.log_normalizer_ = gammaln(self.alpha_.sum(axis=1)) - gammaln(self.alpha_).sum(axis=1)  # (72,)

    @torch.no_grad()
    def _log_probs(self, images: Tensor) -> Tensor:
        """(N, 72, 72) log-softmax outputs: [i, t] is the classifier's output on image i under transformation t."""
        self.network_.eval()
        chunk = max(1, 512 // len(TRANSFORMATIONS))

        def log_probs(x: Tensor) -> Tensor:
            flat = _network_input(transform_all(x, self.shift_).flatten(0, 1))
            return F.log_softmax(self.network_(flat), dim=1).reshape(len(x), len(TRANSFORMATIONS), -1)

        return in_batches(log_probs, images, chunk, self.device_)

    def _score(self, images: Tensor) -> Tensor:
        log_p = self._log_probs(images).double()
        if self.score_ == "simple":
            return log_p.diagonal(dim1=1, dim2=2).sum(dim=1)
        alpha = torch.from_numpy(self.alpha_)
        return ((alpha - 1) * log_p).sum(dim=(1, 2)) + float(self.log_normalizer_.sum())
