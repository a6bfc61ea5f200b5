"""Datasets held as arrays: :class:`ImageData` (a labelled train/test split of uint8 images), any
``.npz`` of arrays, and scikit-learn's bundled digits."""

from __future__ import annotations

import functools
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from corel._io import content_digest
from corel.detection.images import as_uint8_images


@dataclass(frozen=True, eq=False)
class ImageData:
    """A labelled train/test split of uint8 images (N, C, H, W) with labels 0..K-1 (int64)."""

    name: str
    x_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    x_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    class_names: tuple[str, ...] = field(repr=False)

    def __post_init__(self) -> None:
        if not self.class_names:
            raise ValueError(f"{self.name}: no class names")
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 4):
                raise ValueError(f"{self.name}: x_{split} must be a uint8 array (N, C, H, W), "
                                 f"got {getattr(x, 'dtype', type(x))} {getattr(x, 'shape', '')}")
            if len(x) == 0:
                raise ValueError(f"{self.name}: the {split} split is empty")
            if not (isinstance(y, np.ndarray) and y.dtype == np.int64 and y.shape == (len(x),)):
                raise ValueError(f"{self.name}: y_{split} must be int64 of shape ({len(x)},), "
                                 f"got {getattr(y, 'dtype', type(y))} {getattr(y, 'shape', '')}")
            if y.min() < 0 or y.max() >= len(self.class_names):
                raise ValueError(f"{self.name}: y_{split} has labels outside 0..{len(self.class_names) - 1}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"{self.name}: train images {self.x_train.shape[1:]} and test images "
                             f"{self.x_test.shape[1:]} differ in shape")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @functools.cached_property
    def digest(self) -> str:
        """SHA-256 (16 hex digits) of both splits and the class names: stored results are keyed by it, so
        results on other data under the same name (npz, imagefolder) are never mixed in."""
        return content_digest([self.x_train, self.y_train, self.x_test, self.y_test, list(self.class_names)])[:16]

    def __repr__(self) -> str:
        return (f"ImageData(name={self.name!r}, train={self.x_train.shape}, test={self.x_test.shape}, "
                f"num_classes={self.num_classes})")


def as_labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    """Integer class labels of n images -> int64 (n,)."""
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"{what}: expected {n} labels of shape ({n},), got shape {y.shape}")
    if np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{what}: labels must be integers, got {y.dtype}")
    if n and y.min() < 0:
        raise ValueError(f"{what}: labels must be >= 0, got {y.min()}")
    return y.astype(np.int64)


def from_arrays(name: str, arrays: dict[str, np.ndarray], where: str,
                 default_names: tuple[str, ...] | None = None) -> ImageData:
    x_train = as_uint8_images(arrays["x_train"], f"{where} x_train")
    x_test = as_uint8_images(arrays["x_test"], f"{where} x_test")
    y_train = as_labels(arrays["y_train"], len(x_train), f"{where} y_train")
    y_test = as_labels(arrays["y_test"], len(x_test), f"{where} y_test")
    if "class_names" in arrays:
        names = tuple(str(s) for s in np.asarray(arrays["class_names"]).ravel())
    elif default_names is not None:
        names = default_names
    else:
        top = max(y_train.max(initial=-1), y_test.max(initial=-1))
        names = tuple(str(i) for i in range(top + 1))
    return ImageData(name, x_train, y_train, x_test, y_test, names)


def single_npz(root: Path) -> Path:
    if root.is_file():
        return root
    if not root.is_dir():
        raise ValueError(f"npz: {root} does not exist; pass an .npz file or a folder holding one")
    found = sorted(root.glob("*.npz"))
    if len(found) != 1:
        raise ValueError(f"npz: {root} must hold exactly one .npz file, found {len(found)}: "
                         f"{', '.join(p.name for p in found) or 'none'}")
    return found[0]


def load_npz(path: Path, name: str, default_names: tuple[str, ...] | None = None) -> ImageData:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {key: f[key] for key in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"cannot read {path} as an .npz of arrays ({e})") from e
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise ValueError(f"{path} lacks the arrays {', '.join(missing)} (it has {', '.join(arrays) or 'none'})")
    return from_arrays(name, arrays, str(path), default_names)


def load_digits() -> ImageData:
    """scikit-learn's 1797 8x8 digits (0..16) as (N, 1, 8, 8) uint8; stratified 60/40 split, seed 0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target.astype(np.int64), test_size=0.4, random_state=0, stratify=digits.target)
    return ImageData("digits", x_train, y_train, x_test, y_test, tuple(str(d) for d in range(10)))
