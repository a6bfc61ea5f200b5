"""Image datasets as uint8 arrays (N, C, H, W), read from their standard formats without torchvision.

``load_dataset(name, data_dir)`` returns an :class:`ImageData` with a train and a test split.  Names:

- ``cifar10``, ``cifar100`` (fine labels), ``cifar20`` (the 20 CIFAR-100 superclasses): the official
  python releases (``.tar.gz`` or the extracted folder); CIFAR-10 also as ``cifar10.npz``.
- ``tinyimagenet``: TinyImageNet-200 (``.zip`` or the extracted folder); its val split is the test split.
- ``imagefolder``: ImageNet-style ``train/<class>/*`` and ``val/<class>/*`` (or ``test/``) image files.
- ``npz``: any ``.npz`` with x_train, y_train, x_test, y_test (and optionally class_names).
- ``digits``: scikit-learn's bundled 8x8 digits, always available offline.

Decoded image files are resized to ``image_size`` (central square crop, then box filter) and cached
as an .npz in ``$COREL_CACHE`` (default ``~/.cache/corel/decoded``).  Missing CIFAR/TinyImageNet files
are downloaded into ``data_dir`` (default ``$COREL_DATA`` or ``~/.cache/corel/data``); offline, the
download fails within seconds with a message saying which file to put where.  See docs/datasets.md.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import socket
import tarfile
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "cifar20", "tinyimagenet", "imagefolder", "npz", "digits")

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

# The published CIFAR-100 superclass of each fine class (fine label i -> coarse label).
CIFAR100_FINE_TO_COARSE: tuple[int, ...] = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)

IMAGE_EXTENSIONS: tuple[str, ...] = (".bmp", ".jpeg", ".jpg", ".png")

# Seconds to reach the download host (DNS + TCP) and, once connected, the longest silence tolerated.
_CONNECT_TIMEOUT = 5.0
_READ_TIMEOUT = 60.0
# Bump when the decoding changes, so that stale caches are not reused.
_CACHE_VERSION = 1


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

    def __repr__(self) -> str:
        return (f"ImageData(name={self.name!r}, train={self.x_train.shape}, test={self.x_test.shape}, "
                f"num_classes={self.num_classes})")


def to_float(x: np.ndarray) -> np.ndarray:
    """uint8 images (any shape, e.g. (N, C, H, W)) -> float32 in [0, 1]."""
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
        raise ValueError(f"to_float expects a uint8 array, got {getattr(x, 'dtype', type(x))}")
    return np.divide(x, np.float32(255), dtype=np.float32)


def default_data_dir() -> Path:
    """Where CIFAR/TinyImageNet files are looked for and downloaded to: $COREL_DATA or ~/.cache/corel/data."""
    return Path(os.environ.get("COREL_DATA") or "~/.cache/corel/data").expanduser()


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True,
                 image_size: int = 32, cache: bool = True) -> ImageData:
    """Loads dataset ``name`` (one of :data:`DATASETS`) from ``data_dir``.

    ``data_dir`` is the folder holding the dataset's files (or the file itself, for npz and archives);
    it defaults to :func:`default_data_dir` and is required for ``imagefolder`` and ``npz``.
    ``download``: fetch missing CIFAR/TinyImageNet archives into ``data_dir``.  ``image_size``: side
    (pixels) that ``tinyimagenet`` and ``imagefolder`` images are resized to; the other formats keep
    their stored size.  ``cache``: keep decoded image files as an .npz in $COREL_CACHE for fast reloads.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if not (isinstance(image_size, int) and image_size >= 1):
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if name == "digits":
        return _load_digits()
    if data_dir is None:
        if name in ("imagefolder", "npz"):
            raise ValueError(f"{name} needs data_dir (see docs/datasets.md for the layout)")
        data_dir = default_data_dir()
    root = Path(data_dir).expanduser()
    if name == "npz":
        return _load_npz(_single_npz(root), "npz")
    if name == "cifar10":
        return _load_cifar10(root, download)
    if name in ("cifar100", "cifar20"):
        return _load_cifar100(root, download, coarse=name == "cifar20")
    if name == "tinyimagenet":
        return _load_tinyimagenet(root, download, image_size, cache)
    return _load_imagefolder(root, image_size, cache)


# ----------------------------------------------------------------------------- arrays and .npz files


def _as_images(x: np.ndarray, what: str) -> np.ndarray:
    """Images (N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3}, uint8-range integers or floats
    in [0, 1] -> uint8 (N, C, H, W)."""
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


def _as_labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
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


def _from_arrays(name: str, arrays: dict[str, np.ndarray], where: str,
                 default_names: tuple[str, ...] | None = None) -> ImageData:
    x_train = _as_images(arrays["x_train"], f"{where} x_train")
    x_test = _as_images(arrays["x_test"], f"{where} x_test")
    y_train = _as_labels(arrays["y_train"], len(x_train), f"{where} y_train")
    y_test = _as_labels(arrays["y_test"], len(x_test), f"{where} y_test")
    if "class_names" in arrays:
        names = tuple(str(s) for s in np.asarray(arrays["class_names"]).ravel())
    elif default_names is not None:
        names = default_names
    else:
        top = max(y_train.max(initial=-1), y_test.max(initial=-1))
        names = tuple(str(i) for i in range(top + 1))
    return ImageData(name, x_train, y_train, x_test, y_test, names)


def _single_npz(root: Path) -> Path:
    if root.is_file():
        return root
    if not root.is_dir():
        raise ValueError(f"npz: {root} does not exist; pass an .npz file or a folder holding one")
    found = sorted(root.glob("*.npz"))
    if len(found) != 1:
        raise ValueError(f"npz: {root} must hold exactly one .npz file, found {len(found)}: "
                         f"{', '.join(p.name for p in found) or 'none'}")
    return found[0]


def _load_npz(path: Path, name: str, default_names: tuple[str, ...] | None = None) -> ImageData:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {key: f[key] for key in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"cannot read {path} as an .npz of arrays ({e})") from e
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise ValueError(f"{path} lacks the arrays {', '.join(missing)} (it has {', '.join(arrays) or 'none'})")
    return _from_arrays(name, arrays, str(path), default_names)


def _load_digits() -> ImageData:
    """scikit-learn's 1797 8x8 digits (0..16) as (N, 1, 8, 8) uint8; stratified 60/40 split, seed 0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target.astype(np.int64), test_size=0.4, random_state=0, stratify=digits.target)
    return ImageData("digits", x_train, y_train, x_test, y_test, tuple(str(d) for d in range(10)))


# ----------------------------------------------------------------------------- finding and downloading


@dataclass(frozen=True)
class _Archive:
    """An official archive: file name, URL, md5, and the folder it extracts to."""

    filename: str
    url: str
    md5: str
    folder: str


_ARCHIVES: dict[str, _Archive] = {
    "cifar10": _Archive("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                        "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py"),
    "cifar100": _Archive("cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                         "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python"),
    "tinyimagenet": _Archive("tiny-imagenet-200.zip", "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                             "90528d7ca1a48142e341f4ef8d21d0de", "tiny-imagenet-200"),
}


def _find_folder(root: Path, archive: _Archive, marker: str) -> Path | None:
    """The extracted folder: ``root`` itself or ``root/<folder>``, recognised by the file ``marker``."""
    for folder in (root, root / archive.folder):
        if (folder / marker).is_file():
            return folder
    return None


def _find_archive(root: Path, archive: _Archive, dataset: str, download: bool, alternative: str = "") -> Path:
    """The archive ``root`` or ``root/<filename>``; downloaded there if missing and ``download``."""
    if root.is_file():
        return root
    if (root / archive.filename).is_file():
        return root / archive.filename
    where = (f"Put {archive.filename} (from {archive.url}, md5 {archive.md5}) or its extracted folder "
             f"{archive.folder}/ there{alternative}, or pass data_dir=<the folder holding them>.")
    if not download:
        raise ValueError(f"{dataset}: no data in {root} (download=False). {where}")
    try:
        return _download(archive, root)
    except (OSError, urllib.error.URLError, HTTPException) as e:
        raise ValueError(f"{dataset}: no data in {root} and downloading {archive.url} failed ({e}). {where}") from e


def _download(archive: _Archive, root: Path) -> Path:
    """Downloads ``archive`` into ``root`` atomically: to a temporary file, md5-checked, then renamed."""
    _check_reachable(archive.url, _CONNECT_TIMEOUT)
    root.mkdir(parents=True, exist_ok=True)
    target = root / archive.filename
    fd, part = tempfile.mkstemp(dir=root, prefix=f".{archive.filename}.", suffix=".part")
    try:
        md5 = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(archive.url, timeout=_READ_TIMEOUT) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            received = 0
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {archive.filename}") as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    md5.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise ValueError(f"download of {archive.url} is truncated: {received} of {total} bytes; "
                             f"nothing was saved, retry or put a good copy at {target}")
        if md5.hexdigest() != archive.md5:
            raise ValueError(f"download of {archive.url} is corrupt: md5 {md5.hexdigest()}, expected "
                             f"{archive.md5}; nothing was saved, put a good copy at {target}")
        os.replace(part, target)
    finally:
        if os.path.exists(part):
            os.unlink(part)
    return target


def _check_reachable(url: str, timeout: float) -> None:
    """Raises OSError within about ``timeout`` seconds if the host of ``url`` (or the proxy for it)
    cannot be reached.  urllib alone can hang far longer offline: its timeout does not cover DNS."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    address = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(e)

    # A daemon thread, so that a hung DNS lookup can neither block us nor the interpreter's exit.
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout + 1)
    if not outcome:
        raise TimeoutError(f"no answer from {address[0]}:{address[1]} within {timeout:g} s (offline?)")
    if outcome[0] is not None:
        raise outcome[0]


# ----------------------------------------------------------------------------- CIFAR (python pickles)


class _CifarUnpickler(pickle.Unpickler):
    """Rebuilds only dicts, lists, bytes and numpy arrays: a pickle can run arbitrary code, and the
    files may come from anywhere."""

    _ALLOWED = frozenset({
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    })

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not a CIFAR data file")
        return super().find_class(module, name)


def _unpickle(fp: BinaryIO) -> dict:
    batch = _CifarUnpickler(fp, encoding="bytes").load()  # the files were written by Python 2
    if not isinstance(batch, dict):
        raise ValueError(f"expected a dict, got {type(batch).__name__}")
    return batch


def _read_pickles(source: Path, folder: str, names: tuple[str, ...]) -> dict[str, dict]:
    """Unpickles the files ``names`` of a CIFAR release from its extracted folder or its archive."""
    if source.is_dir():
        missing = [n for n in names if not (source / n).is_file()]
        if missing:
            raise ValueError(f"{source} lacks the files {', '.join(missing)}")
    found: dict[str, dict] = {}
    try:
        if source.is_dir():
            for n in names:
                with open(source / n, "rb") as fp:
                    found[n] = _unpickle(fp)
        else:
            with tarfile.open(source, "r:*") as tar:
                for member in tar:
                    parent, _, base = member.name.rpartition("/")
                    if member.isfile() and base in names and parent.rpartition("/")[2] == folder:
                        found[base] = _unpickle(tar.extractfile(member))
    except Exception as e:  # noqa: BLE001 - whatever fails in parsing, the file is damaged
        raise ValueError(f"{source} is corrupt or truncated ({type(e).__name__}: {e})") from e
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"{source} lacks {', '.join(f'{folder}/{n}' for n in missing)}")
    return found


def _entry(batch: dict, key: str, where: str):
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise ValueError(f"{where} has no {key!r} entry: not a CIFAR file")


def _strings(values) -> tuple[str, ...]:
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values)


def _cifar_images(batch: dict, where: str) -> np.ndarray:
    data = np.asarray(_entry(batch, "data", where))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{where}: expected uint8 data of shape (N, 3072), got {data.dtype} {data.shape}")
    return data.reshape(-1, 3, 32, 32)  # rows are stored channel-major: R plane, G plane, B plane


def _cifar_labels(batch: dict, key: str, n: int, where: str) -> np.ndarray:
    return _as_labels(np.asarray(_entry(batch, key, where)), n, f"{where} {key}")


def _load_cifar10(root: Path, download: bool) -> ImageData:
    archive = _ARCHIVES["cifar10"]
    source = _find_folder(root, archive, "data_batch_1")
    if source is None:
        npz = root if root.suffix == ".npz" else root / "cifar10.npz"
        if npz.is_file():
            return _load_npz(npz, "cifar10", CIFAR10_CLASSES)
        source = _find_archive(root, archive, "cifar10", download, alternative=", or a cifar10.npz")
    batches = tuple(f"data_batch_{i}" for i in range(1, 6))
    files = _read_pickles(source, archive.folder, (*batches, "test_batch", "batches.meta"))
    x_parts = [_cifar_images(files[b], b) for b in batches]
    x_train = np.concatenate(x_parts)
    y_train = np.concatenate([_cifar_labels(files[b], "labels", len(x), b) for b, x in zip(batches, x_parts)])
    x_test = _cifar_images(files["test_batch"], "test_batch")
    y_test = _cifar_labels(files["test_batch"], "labels", len(x_test), "test_batch")
    names = _strings(_entry(files["batches.meta"], "label_names", "batches.meta"))
    return ImageData("cifar10", x_train, y_train, x_test, y_test, names)


def _load_cifar100(root: Path, download: bool, coarse: bool) -> ImageData:
    """CIFAR-100 with fine labels, or (``coarse``) the 20 superclass labels stored in the files."""
    archive = _ARCHIVES["cifar100"]
    name = "cifar20" if coarse else "cifar100"
    source = _find_folder(root, archive, "train") or _find_archive(root, archive, name, download)
    files = _read_pickles(source, archive.folder, ("train", "test", "meta"))
    superclass = np.asarray(CIFAR100_FINE_TO_COARSE)
    split = {}
    for part in ("train", "test"):
        x = _cifar_images(files[part], part)
        fine = _cifar_labels(files[part], "fine_labels", len(x), part)
        coarse_labels = _cifar_labels(files[part], "coarse_labels", len(x), part)
        if fine.max() >= len(superclass):
            raise ValueError(f"{source} {part}: fine labels go up to {fine.max()}, CIFAR-100 has 100 classes")
        wrong = np.flatnonzero(superclass[fine] != coarse_labels)
        if wrong.size:
            i = wrong[0]
            raise ValueError(f"{source} {part}: the coarse labels of {wrong.size} images disagree with the published "
                             f"CIFAR-100 superclasses (image {i}: fine {fine[i]}, coarse {coarse_labels[i]}, expected "
                             f"{superclass[fine[i]]}); the file is damaged or not CIFAR-100")
        split[part] = (x, coarse_labels if coarse else fine)
    key = "coarse_label_names" if coarse else "fine_label_names"
    names = _strings(_entry(files["meta"], key, "meta"))
    return ImageData(name, *split["train"], *split["test"], names)


# ----------------------------------------------------------------------------- image files


class _Files(Protocol):
    """Read access to a tree of files (an extracted folder or a .zip), by relative posix path."""

    def names(self, under: str) -> list[str]: ...  # every file below folder ``under``, sorted

    def exists(self, name: str) -> bool: ...

    def open(self, name: str) -> BinaryIO: ...

    def where(self, name: str) -> str: ...  # for messages

    def fingerprint(self, names: list[str]) -> str: ...  # changes when any of ``names`` changes

    def close(self) -> None: ...


class _FolderFiles:
    def __init__(self, root: Path):
        self.root = root

    def names(self, under: str) -> list[str]:
        found = []
        for folder, _, files in os.walk(self.root / under, followlinks=True):
            rel = Path(folder).relative_to(self.root).as_posix()
            found.extend(f"{rel}/{f}" for f in files)
        return sorted(found)

    def exists(self, name: str) -> bool:
        return (self.root / name).is_file()

    def open(self, name: str) -> BinaryIO:
        return open(self.root / name, "rb")

    def where(self, name: str) -> str:
        return str(self.root / name)

    def fingerprint(self, names: list[str]) -> str:
        digest = hashlib.sha256(str(self.root.resolve()).encode())
        for name in names:
            stat = (self.root / name).stat()
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def close(self) -> None:
        pass


class _ZipFiles:
    def __init__(self, path: Path, folder: str):
        self.path, self.prefix = path, f"{folder}/"
        try:
            self.zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path} is corrupt or truncated ({e})") from e
        self.members = {n[len(self.prefix):] for n in self.zip.namelist() if n.startswith(self.prefix)}

    def names(self, under: str) -> list[str]:
        return sorted(n for n in self.members if n.startswith(f"{under}/") and not n.endswith("/"))

    def exists(self, name: str) -> bool:
        return name in self.members

    def open(self, name: str) -> BinaryIO:
        return self.zip.open(self.prefix + name)

    def where(self, name: str) -> str:
        return f"{self.path}:{self.prefix}{name}"

    def fingerprint(self, names: list[str]) -> str:
        stat = self.path.stat()
        return hashlib.sha256(f"{self.path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()

    def close(self) -> None:
        self.zip.close()


def _is_image(name: str) -> bool:
    base = name.rpartition("/")[2]
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def _read_text(files: _Files, name: str) -> str:
    if not files.exists(name):
        raise ValueError(f"{files.where(name)} is missing")
    with files.open(name) as fp:
        return fp.read().decode()


def _decode(fp: BinaryIO, size: int) -> np.ndarray:
    """One image file -> (3, size, size) uint8 RGB: the central square, resized (box filter when shrinking)."""
    with Image.open(fp) as image:
        image.draft("RGB", (size, size))  # JPEG: decode at the smallest DCT scale still >= size, much faster
        rgb = image.convert("RGB")
    width, height = rgb.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    resample = Image.Resampling.BOX if side >= size else Image.Resampling.BILINEAR
    square = rgb.resize((size, size), resample, box=(left, top, left + side, top + side))
    return np.asarray(square).transpose(2, 0, 1)


def _decode_all(files: _Files, names: list[str], size: int, desc: str) -> np.ndarray:
    """Decodes straight into one preallocated (N, 3, size, size) uint8 array."""
    out = np.empty((len(names), 3, size, size), np.uint8)
    for i, name in enumerate(tqdm(names, desc=desc, unit="img", mininterval=1.0)):
        try:
            with files.open(name) as fp:
                out[i] = _decode(fp, size)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, Image.DecompressionBombError) as e:
            raise ValueError(f"cannot decode the image {files.where(name)} ({e})") from e
    return out


def _cache_dir() -> Path:
    return Path(os.environ.get("COREL_CACHE") or "~/.cache/corel/decoded").expanduser()


def _cached(name: str, image_size: int, fingerprint: str, build, enabled: bool) -> ImageData:
    """``build()``, or its result saved earlier for the same files and ``image_size``."""
    if not enabled:
        return build()
    key = hashlib.sha256(f"{_CACHE_VERSION}\0{name}\0{image_size}\0{fingerprint}".encode()).hexdigest()[:16]
    path = _cache_dir() / f"{name}-{image_size}px-{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                return ImageData(name, f["x_train"], f["y_train"], f["x_test"], f["y_test"],
                                 tuple(str(s) for s in f["class_names"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            warnings.warn(f"ignoring the unreadable cache {path} ({e}); decoding again", stacklevel=3)
    data = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, part = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                np.savez(out, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test,
                         y_test=data.y_test, class_names=np.array(data.class_names))
            os.replace(part, path)
        finally:
            if os.path.exists(part):
                os.unlink(part)
    except OSError as e:
        warnings.warn(f"could not write the cache {path} ({e}); the next load decodes again", stacklevel=3)
    return data


def _load_tinyimagenet(root: Path, download: bool, image_size: int, cache: bool) -> ImageData:
    """TinyImageNet-200: 500 train and 50 val (= test) images for each of 200 classes, in sorted wnid order."""
    archive = _ARCHIVES["tinyimagenet"]
    folder = _find_folder(root, archive, "wnids.txt")
    files: _Files = (_FolderFiles(folder) if folder is not None
                     else _ZipFiles(_find_archive(root, archive, "tinyimagenet", download), archive.folder))
    try:
        wnids = sorted(set(_read_text(files, "wnids.txt").split()))
        index = {wnid: i for i, wnid in enumerate(wnids)}
        train = [n for n in files.names("train") if _is_image(n)]
        unknown = sorted({n.split("/")[1] for n in train} - index.keys())
        if unknown:
            raise ValueError(f"{files.where('train')} has classes missing from wnids.txt: {', '.join(unknown[:5])}")
        y_train = np.array([index[n.split("/")[1]] for n in train], np.int64)
        empty = [wnids[i] for i in np.flatnonzero(np.bincount(y_train, minlength=len(wnids)) == 0)]
        if empty:
            raise ValueError(f"{files.where('train')} has no images of {len(empty)} classes, e.g. {empty[0]}")
        test, y_test = [], []
        for line in _read_text(files, "val/val_annotations.txt").splitlines():
            if line.strip():
                image, wnid = line.split("\t")[:2]
                if wnid not in index:
                    raise ValueError(f"{files.where('val/val_annotations.txt')}: {image} has unknown class {wnid}")
                test.append(f"val/images/{image}")
                y_test.append(index[wnid])
        words = {}
        if files.exists("words.txt"):
            for line in _read_text(files, "words.txt").splitlines():
                wnid, _, synonyms = line.partition("\t")
                words[wnid] = synonyms.split(",")[0].strip()
        names = tuple(words.get(w) or w for w in wnids)

        def build() -> ImageData:
            return ImageData("tinyimagenet", _decode_all(files, train, image_size, "decoding tinyimagenet train"),
                             y_train, _decode_all(files, test, image_size, "decoding tinyimagenet val"),
                             np.array(y_test, np.int64), names)

        return _cached("tinyimagenet", image_size, files.fingerprint(train + test), build, cache)
    finally:
        files.close()


def _load_imagefolder(root: Path, image_size: int, cache: bool) -> ImageData:
    """root/train/<class>/<images> and root/val/<class>/<images> (or test/); classes in sorted order."""
    layout = "expected train/<class>/<image files> and val/<class>/... (or test/<class>/...)"
    if not (root / "train").is_dir():
        raise ValueError(f"imagefolder: {root} has no train/ folder; {layout}")
    test_split = next((s for s in ("val", "test") if (root / s).is_dir()), None)
    if test_split is None:
        raise ValueError(f"imagefolder: {root} has no val/ or test/ folder; {layout}")
    classes = sorted(e.name for e in os.scandir(root / "train") if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ValueError(f"imagefolder: {root / 'train'} has no class folders; {layout}")
    index = {c: i for i, c in enumerate(classes)}
    files = _FolderFiles(root)
    split = {}
    for part in ("train", test_split):
        names = [n for n in files.names(part) if _is_image(n) and n.count("/") >= 2]
        labels = [n.split("/")[1] for n in names]
        unknown = sorted(set(labels) - index.keys())
        if unknown:
            raise ValueError(f"imagefolder: {root / part} has classes without training folder: {', '.join(unknown[:5])}")
        split[part] = (names, np.array([index[c] for c in labels], np.int64))
    empty = [classes[i] for i in np.flatnonzero(np.bincount(split["train"][1], minlength=len(classes)) == 0)]
    if empty:
        raise ValueError(f"imagefolder: {len(empty)} class folders in {root / 'train'} hold no images "
                         f"({', '.join(IMAGE_EXTENSIONS)}), e.g. {empty[0]}")
    if not split[test_split][0]:
        raise ValueError(f"imagefolder: {root / test_split} holds no images; {layout}")
    (train, y_train), (test, y_test) = split["train"], split[test_split]

    def build() -> ImageData:
        return ImageData("imagefolder", _decode_all(files, train, image_size, "decoding train images"), y_train,
                         _decode_all(files, test, image_size, f"decoding {test_split} images"), y_test, tuple(classes))

    return _cached("imagefolder", image_size, files.fingerprint(train + test), build, cache)
