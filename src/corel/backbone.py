"""A trained encoder with its latent geometry (eta, metric): the file the one-class part loads."""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import torch
from torch import Tensor

from corel.distances import Metric, metric_order
from corel.models import AutoencoderConfig, BranchedAutoencoder

FORMAT = "corel-backbone"
VERSION = 1


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """``write(file)`` into a temporary file beside ``path``, then rename: a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save, atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def safe_torch_load(path: str | os.PathLike, what: str) -> Any:
    """torch.load with ``weights_only=True``; missing, truncated or foreign files get a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        raise ValueError(f"{what} {path} is corrupt, truncated or not a corel file: {e}") from e


def as_image_tensor(x: np.ndarray | Tensor, input_shape: tuple[int, ...] | None = None) -> Tensor:
    """Images, uint8 0..255 or float in [0, 1] -> float32 CPU tensor in [0, 1].

    ``input_shape``: the per-sample shape required, e.g. (C, H, W) or (D,); None = any (N, C, H, W).
    """
    t = torch.as_tensor(x)
    if input_shape is None:
        if t.ndim != 4:
            raise ValueError(f"expected images of shape (N, C, H, W), got an array of shape {tuple(t.shape)}")
    elif t.ndim != len(input_shape) + 1 or tuple(t.shape[1:]) != tuple(input_shape):
        raise ValueError(f"expected images of shape (N, {', '.join(map(str, input_shape))}), got {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError("no images given (N = 0)")
    if t.dtype == torch.uint8:
        return t.cpu().float().div_(255)
    if not t.is_floating_point():
        raise ValueError(f"images must be uint8 (0..255) or float (0..1), got {t.dtype}")
    if not torch.isfinite(t).all():
        raise ValueError("images contain NaN or inf values")
    if t.min() < 0 or t.max() > 1:
        raise ValueError(f"float images must lie in [0, 1], got values in [{t.min().item():.3g}, {t.max().item():.3g}]"
                         " (pass uint8 for 0..255 data)")
    return t.cpu().float()


@dataclass
class Backbone:
    """A branched autoencoder's encoder plus the latent scale it was trained for.

    eta: the connectivity scale (units of ``metric``, per branch); metric: the latent metric.
    info: free-form training metadata (dataset, epochs, lambda, seed, ...).
    """

    model: BranchedAutoencoder
    eta: float = 2.0
    metric: Metric = "l1"
    info: dict = field(default_factory=dict)

    @property
    def config(self) -> AutoencoderConfig:
        return self.model.config

    @property
    def fingerprint(self) -> str:
        """16 hex digits of a SHA-256 over the weights: identifies the backbone in stored results."""
        digest = hashlib.sha256()
        for name, value in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    @torch.no_grad()
    def encode(self, x: np.ndarray | Tensor, batch_size: int = 1000, device: str | torch.device | None = None) -> Tensor:
        """Images (N, *input_shape) -> codes (N, branches, branch_dim) on CPU, in batches, no autograd."""
        images = as_image_tensor(x, self.config.input_shape)
        device = torch.device(device) if device is not None else next(self.model.parameters()).device
        self.model.eval()
        codes = [self.model.encode(images[i: i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)]
        return torch.cat(codes).reshape(len(images), self.config.branches, self.config.branch_dim)

    def save(self, path: str | os.PathLike) -> None:
        atomic_torch_save(
            {
                "format": FORMAT,
                "version": VERSION,
                "config": self.config.to_dict(),
                "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "eta": float(self.eta),
                "metric": self.metric,
                "info": self.info,
            },
            path,
        )

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "Backbone":
        blob = safe_torch_load(path, "backbone file")
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise ValueError(f"{path} is not a corel backbone file")
        if blob.get("version", 0) > VERSION:
            raise ValueError(f"{path} has backbone format version {blob['version']}; this corel reads <= {VERSION}")
        model = BranchedAutoencoder(AutoencoderConfig.from_dict(blob["config"]))
        model.load_state_dict(blob["state_dict"])
        metric_order(blob["metric"])
        return cls(model.to(device).eval(), float(blob["eta"]), blob["metric"], dict(blob.get("info", {})))
