"""CIFAR-10, CIFAR-100 and its 20 superclasses, from the official python releases (archive or
extracted folder) or, for CIFAR-10, a ``cifar10.npz``."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from corel.experiments.datasets.arrays import ImageData, as_labels, load_npz
from corel.experiments.datasets.download import ARCHIVES, find_archive, find_folder

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
    return as_labels(np.asarray(_entry(batch, key, where)), n, f"{where} {key}")


def load_cifar10(root: Path, download: bool) -> ImageData:
    archive = ARCHIVES["cifar10"]
    source = find_folder(root, archive, "data_batch_1")
    if source is None:
        npz = root if root.suffix == ".npz" else root / "cifar10.npz"
        if npz.is_file():
            return load_npz(npz, "cifar10", CIFAR10_CLASSES)
        source = find_archive(root, archive, "cifar10", download, alternative=", or a cifar10.npz")
    batches = tuple(f"data_batch_{i}" for i in range(1, 6))
    files = _read_pickles(source, archive.folder, (*batches, "test_batch", "batches.meta"))
    x_parts = [_cifar_images(files[b], b) for b in batches]
    x_train = np.concatenate(x_parts)
    y_train = np.concatenate([_cifar_labels(files[b], "labels", len(x), b) for b, x in zip(batches, x_parts)])
    x_test = _cifar_images(files["test_batch"], "test_batch")
    y_test = _cifar_labels(files["test_batch"], "labels", len(x_test), "test_batch")
    names = _strings(_entry(files["batches.meta"], "label_names", "batches.meta"))
    return ImageData("cifar10", x_train, y_train, x_test, y_test, names)


def load_cifar100(root: Path, download: bool, coarse: bool) -> ImageData:
    """CIFAR-100 with fine labels, or (``coarse``) the 20 superclass labels stored in the files."""
    archive = ARCHIVES["cifar100"]
    name = "cifar20" if coarse else "cifar100"
    source = find_folder(root, archive, "train") or find_archive(root, archive, name, download)
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
