"""Image datasets as uint8 arrays (N, C, H, W), read from their standard formats without torchvision.

``load_dataset(name, data_dir)`` returns an :class:`ImageData` with a train and a test split.  Names:

- ``cifar10``, ``cifar100`` (fine labels), ``cifar20`` (the 20 CIFAR-100 superclasses): the official
  python releases (``.tar.gz`` or the extracted folder); CIFAR-10 also as ``cifar10.npz``.
- ``tinyimagenet``: TinyImageNet-200 (``.zip`` or the extracted folder); its val split is the test split.
- ``imagefolder``: ImageNet-style ``train/<class>/*`` and ``val/<class>/*`` (or ``test/``) image files.
- ``npz``: any ``.npz`` with x_train, y_train, x_test, y_test (and optionally class_names).
- ``digits``: scikit-learn's bundled 8x8 digits, always available offline.

Decoded image files are resized to ``image_size`` (central square crop, then PIL's bilinear filter
as the authors' torchvision ``Resize``, or ``resize="box"``) and cached
as an .npz in ``$COREL_CACHE`` (default ``~/.cache/corel/decoded``).  Missing CIFAR/TinyImageNet files
are downloaded into ``data_dir`` (default ``$COREL_DATA`` or ``~/.cache/corel/data``); offline, the
download fails within seconds with a message saying which file to put where.  See docs/datasets.md.
"""

from __future__ import annotations

import os
from pathlib import Path

from corel.experiments.datasets.arrays import ImageData, load_digits, load_npz, single_npz
from corel.experiments.datasets.cifar import CIFAR10_CLASSES, CIFAR100_FINE_TO_COARSE, load_cifar10, load_cifar100
from corel.experiments.datasets.image_files import check_resize, load_imagefolder, load_tinyimagenet

DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "cifar20", "tinyimagenet", "imagefolder", "npz", "digits")

__all__ = ["CIFAR10_CLASSES", "CIFAR100_FINE_TO_COARSE", "DATASETS", "ImageData", "default_data_dir", "load_dataset"]


def default_data_dir() -> Path:
    """Where CIFAR/TinyImageNet files are looked for and downloaded to: $COREL_DATA or ~/.cache/corel/data."""
    return Path(os.environ.get("COREL_DATA") or "~/.cache/corel/data").expanduser()


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True,
                 image_size: int = 32, resize: str = "bilinear", cache: bool = True) -> ImageData:
    """Loads dataset ``name`` (one of :data:`DATASETS`) from ``data_dir``.

    ``data_dir`` is the folder holding the dataset's files (or the file itself, for npz and archives);
    it defaults to :func:`default_data_dir` and is required for ``imagefolder`` and ``npz``.
    ``download``: fetch missing CIFAR/TinyImageNet archives into ``data_dir``.  ``image_size``: side
    (pixels) that ``tinyimagenet`` and ``imagefolder`` images are resized to with ``resize``
    ("bilinear", the authors' filter, or "box"); the other formats keep their stored size.
    ``cache``: keep decoded image files as an .npz in $COREL_CACHE for fast reloads.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if isinstance(image_size, bool) or not (isinstance(image_size, int) and image_size >= 1):
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    check_resize(resize)
    if name == "digits":
        return load_digits()
    if data_dir is None:
        if name in ("imagefolder", "npz"):
            raise ValueError(f"{name} needs data_dir (see docs/datasets.md for the layout)")
        data_dir = default_data_dir()
    root = Path(data_dir).expanduser()
    if name == "npz":
        return load_npz(single_npz(root), "npz")
    if name == "cifar10":
        return load_cifar10(root, download)
    if name in ("cifar100", "cifar20"):
        return load_cifar100(root, download, coarse=name == "cifar20")
    if name == "tinyimagenet":
        return load_tinyimagenet(root, download, image_size, resize, cache)
    return load_imagefolder(root, image_size, resize, cache)
