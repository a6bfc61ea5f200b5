"""What every baseline detector shares: input validation, seeding, mini-batch training and scoring."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import Tensor, nn

from corel._checks import check_ints, check_number
from corel.detection.base import BaseDetector, check_seed
from corel.detection.images import as_image_tensor


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Runs the block with the global torch RNGs (CPU and ``device``) seeded, restoring them afterwards:
    weight initialisation, dropout and noise inside are reproducible and the caller's state is untouched."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def minibatches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """One epoch of shuffled index batches over range(n).  A trailing batch of one sample is dropped
    (batch norm cannot train on it); the shuffle differs per epoch, so no sample is always left out."""
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        idx = order[start: start + batch_size]
        if len(idx) > 1 or n == 1:
            yield idx


def train(
    model: nn.Module,
    loss_fn: Callable[[Tensor], Tensor],
    data: Tensor,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    verbose: bool = False,
    name: str = "",
) -> None:
    """Mini-batch training: per epoch, ``loss_fn(data[batch])`` over shuffled batches, one optimizer step
    each; ``scheduler`` steps once per epoch.  ``data`` lives on the training device.  ``batch_size``
    must be >= 2: every network here has batch norm, and :func:`minibatches` drops batches of one,
    so batch_size 1 trained nothing at all (without a word)."""
    check_ints(2, batch_size=batch_size)
    model.train()
    for epoch in range(epochs):
        total, count = 0.0, 0
        for idx in minibatches(len(data), batch_size, generator):
            loss = loss_fn(data[idx.to(data.device)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
        if scheduler is not None:
            scheduler.step()
        if verbose:
            print(f"{name} epoch {epoch + 1}/{epochs}  loss {total / max(count, 1):.6g}", flush=True)


def in_batches(fn: Callable[[Tensor], Tensor], images: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """``fn`` applied to ``images`` (N, ...) in batches on ``device``; results concatenated on the CPU."""
    return torch.cat([fn(images[i: i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)])


def check_positive(**params: float) -> None:
    """ValueError naming the first parameter that is not a finite number > 0 (NaN and text included)."""
    for name, value in params.items():
        check_number(value, name, strict=True)


def check_non_negative(**params: float) -> None:
    """ValueError naming the first parameter that is not a finite number >= 0."""
    for name, value in params.items():
        check_number(value, name)


class BaselineDetector(BaseDetector):
    """Template of the deep baseline detectors (the :class:`~corel.detection.base.BaseDetector`
    contract): images as in :func:`corel.detection.images.as_image_tensor`, the RNGs seeded from
    ``self.seed``, the work on ``self.device``.

    Subclasses implement ``_train(images)`` and ``_score(images) -> (N,)``; both receive float32
    CPU tensors in [0, 1] (N, C, H, W) and run seeded (``self.seed_``) on ``self.device_``.  The training samples'
    scores, which set ``offset_``, are ``_score`` of the training images.
    """

    seed: int
    device: str

    def _fit(self, X: np.ndarray | Tensor) -> np.ndarray:
        images = as_image_tensor(X)
        if len(images) < 2:
            raise ValueError(f"need at least 2 class samples to fit, got {len(images)}")
        self.seed_ = check_seed(self.seed)
        self.device_ = torch.device(self.device)
        self.input_shape_ = tuple(images.shape[1:])
        with seeded(self.seed_, self.device_):
            self._train(images)
            return self._score(images).double().numpy()

    def _score_samples(self, X: np.ndarray | Tensor) -> np.ndarray:
        """(N,) float64 normality scores of images X (N, *input_shape_); higher = more normal."""
        check_is_fitted(self, "input_shape_")
        images = as_image_tensor(X, self.input_shape_)
        with seeded(self.seed_, self.device_):
            return self._score(images).double().numpy()

    def _train(self, images: Tensor) -> None:
        raise NotImplementedError

    def _score(self, images: Tensor) -> Tensor:
        raise NotImplementedError
