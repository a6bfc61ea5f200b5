"""Image arrays, the one place where they are checked and converted.

Stored images are uint8 (N, C, H, W), 0..255; models take float32 in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def as_uint8_images(x: np.ndarray, what: str = "images") -> np.ndarray:
    """Images (N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3}, integers in 0..255 or floats
    in [0, 1] -> uint8 (N, C, H, W).  ``what`` names the array in error messages."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"{what}: expected images (N, H, W), (N, H, W, C) or (N, C, H, W), got shape {x.shape}")
    first, last = x.shape[1] in (1, 3), x.shape[3] in (1, 3)
    if first and last:  # either axis could hold the channels: take the reading with square images
        first, last = x.shape[2] == x.shape[3], x.shape[1] == x.shape[2]
    if first == last:
        raise ValueError(f"{what}: cannot tell the channel axis (1 or 3 channels) of images with shape {x.shape}")
    if last:
        x = x.transpose(0, 3, 1, 2)
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ValueError(f"{what}: integer images must lie in 0..255, got {x.min()}..{x.max()}")
        return np.ascontiguousarray(x, dtype=np.uint8)
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise ValueError(f"{what}: images contain NaN or inf")
        if x.size and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"{what}: float images must lie in [0, 1] (integer images in 0..255), "
                             f"got {x.min():g}..{x.max():g}")
        return np.ascontiguousarray(np.rint(x * 255), dtype=np.uint8)
    raise ValueError(f"{what}: unsupported image dtype {x.dtype}")


def unit_float(images: Tensor) -> Tensor:
    """uint8 images (any shape), on any device -> float32 in [0, 1] on the same device."""
    return images.float().div_(255)


def as_image_tensor(x: np.ndarray | Tensor, input_shape: tuple[int, ...] | None = None) -> Tensor:
    """Images, uint8 0..255 or float in [0, 1] -> float32 CPU tensor in [0, 1].

    ``input_shape``: the per-sample shape required, e.g. (C, H, W) or (D,); None = any (N, C, H, W).
    """
    if not isinstance(x, (np.ndarray, Tensor)):
        raise ValueError(f"images must be a numpy array or a torch tensor, got {type(x).__name__}")
    t = torch.as_tensor(x)
    if input_shape is None:
        if t.ndim != 4:
            raise ValueError(f"expected images of shape (N, C, H, W), got an array of shape {tuple(t.shape)}")
    elif t.ndim != len(input_shape) + 1 or tuple(t.shape[1:]) != tuple(input_shape):
        raise ValueError(f"expected images of shape (N, {', '.join(map(str, input_shape))}), got {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError("no images given (N = 0)")
    if t.dtype == torch.uint8:
        return unit_float(t.cpu())
    if not t.is_floating_point():
        raise ValueError(f"images must be uint8 (0..255) or float (0..1), got {t.dtype}")
    if not torch.isfinite(t).all():
        raise ValueError("images contain NaN or inf values")
    if t.min() < 0 or t.max() > 1:
        raise ValueError(f"float images must lie in [0, 1], got values in [{t.min().item():.3g}, {t.max().item():.3g}]"
                         " (pass uint8 for 0..255 data)")
    return t.cpu().float()
