"""A trained encoder with its latent geometry (eta, metric): the file the one-class part loads.

File format (version 2): ``torch.save`` of a header (format name, version, SHA-256 of the
content) around the content (architecture, weights, eta, metric, training metadata), written
atomically and read with ``weights_only=True``; the checksum is verified on load, so a damaged
file is refused instead of loading changed weights.  :func:`pretrained` returns the backbones that
ship with corel.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from corel._checks import check_ints
from corel._io import load_checked, save_checked
from corel.detection.images import as_image_tensor
from corel.detection.models import AutoencoderConfig, BranchedAutoencoder
from corel.topology.distances import Metric, check_scale, metric_name

FORMAT = "corel-backbone"
VERSION = 2

# Backbones shipped inside the package (corel/detection/pretrained/<name>.pt), with the SHA-256 of
# each file; docs/pretrained.md says how each was made.
PRETRAINED: dict[str, str] = {
    "cifar10": "af839b6aad965c35a8254b6d6cb68ea1d3efafc2d06423d13bb36725fc53ecc3",
}


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
        """Images (N, *input_shape) -> codes (N, branches, branch_dim) on CPU, in batches, no autograd.
        ``device``: where to encode (the model moves there); None = where the model is."""
        check_ints(1, batch_size=batch_size)
        images = as_image_tensor(x, self.config.input_shape)
        device = torch.device(device) if device is not None else next(self.model.parameters()).device
        # a loaded detector's backbone is on the CPU whatever its device parameter says
        self.model.to(device).eval()
        codes = [self.model.encode(images[i: i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)]
        return torch.cat(codes).reshape(len(images), self.config.branches, self.config.branch_dim)

    def to_dict(self) -> dict[str, Any]:
        """The file's content: plain types and CPU tensors."""
        return {"config": self.config.to_dict(),
                "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "eta": float(self.eta), "metric": self.metric, "info": self.info}

    @classmethod
    def from_dict(cls, content: dict[str, Any], device: str | torch.device = "cpu", where: str = "backbone") -> "Backbone":
        """The inverse of :meth:`to_dict`; ValueError naming ``where`` for content that does not fit."""
        try:
            model = BranchedAutoencoder(AutoencoderConfig.from_dict(content["config"]))
            model.load_state_dict(content["state_dict"])
            eta = check_scale(content["eta"], "eta")
            metric = metric_name(content["metric"])
            info = dict(content.get("info") or {})
        except (KeyError, TypeError, RuntimeError, ValueError) as e:
            raise ValueError(f"{where} does not hold a valid backbone ({type(e).__name__}: {e})") from e
        return cls(model.to(device).eval(), eta, metric, info)

    def save(self, path: str | os.PathLike) -> None:
        """Writes the backbone to one file, atomically, with a checksum of its content."""
        save_checked(self.to_dict(), path, format=FORMAT, version=VERSION)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "Backbone":
        """Reads a file written by :meth:`save`; a damaged or foreign file raises ValueError."""
        content = load_checked(path, format=FORMAT, version=VERSION, what="corel backbone file",
                               older="corel 0.1 wrote it; pass its run's checkpoints/last.ckpt instead, which "
                                     "corel reads (e.g. corel evaluate --backbone run/checkpoints/last.ckpt)")
        return cls.from_dict(content, device, where=str(path))


def pretrained_path(name: str) -> Path:
    """The file of the shipped backbone ``name`` (one of :data:`PRETRAINED`), its checksum verified."""
    if name not in PRETRAINED:
        raise ValueError(f"no pretrained backbone {name!r}; corel ships {', '.join(PRETRAINED) or 'none'}")
    path = Path(str(resources.files("corel.detection") / "pretrained" / f"{name}.pt"))
    if not path.is_file():
        raise FileNotFoundError(f"the pretrained backbone {name!r} is missing from this installation ({path})")
    if hashlib.sha256(path.read_bytes()).hexdigest() != PRETRAINED[name]:
        raise ValueError(f"the pretrained backbone file {path} is damaged (SHA-256 mismatch); reinstall corel")
    return path


def pretrained(name: str = "cifar10", device: str | torch.device = "cpu") -> Backbone:
    """A backbone that ships with corel, e.g. ``"cifar10"`` (docs/pretrained.md)."""
    return Backbone.load(pretrained_path(name), device)


def resolve_backbone(backbone: "Backbone | str | os.PathLike", device: str | torch.device = "cpu") -> Backbone:
    """A :class:`Backbone`, the name of a shipped one, or the path of a backbone file -> Backbone."""
    if isinstance(backbone, Backbone):
        return backbone
    if isinstance(backbone, str) and backbone in PRETRAINED:
        return pretrained(backbone, device)
    if isinstance(backbone, (str, os.PathLike)):
        if not Path(backbone).exists():
            raise FileNotFoundError(f"corel backbone file not found: {backbone} (the shipped backbones: "
                                    f"{', '.join(PRETRAINED) or 'none'})")
        return Backbone.load(backbone, device)
    raise ValueError(f"backbone must be a Backbone, a pretrained name ({', '.join(PRETRAINED) or 'none'}) "
                     f"or a file path, got {type(backbone).__name__}")
