"""Datasets of image files: TinyImageNet-200 (archive or folder) and ImageNet-style folders, decoded
into uint8 arrays and cached.

Each image becomes its central square, resized to ``image_size`` with ``resize``: "bilinear" (the
default: PIL's bilinear filter, antialiased when shrinking, which is what the authors' torchvision
``Resize((32, 32))`` does on PIL images) or "box" (area average).  Decoded datasets are cached as an
.npz in ``$COREL_CACHE`` (default ``~/.cache/corel/decoded``), keyed by the files, the size and the filter.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Protocol

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from corel._io import atomic_write
from corel.detection.images import as_uint8_images
from corel.experiments.datasets.arrays import ImageData
from corel.experiments.datasets.download import ARCHIVES, find_archive, find_folder

IMAGE_EXTENSIONS: tuple[str, ...] = (".bmp", ".jpeg", ".jpg", ".png")
RESIZE_FILTERS: dict[str, Image.Resampling] = {"bilinear": Image.Resampling.BILINEAR, "box": Image.Resampling.BOX}
# Bump when the decoding changes, so that stale caches are not reused.
_CACHE_VERSION = 3



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


def check_resize(resize: str) -> Image.Resampling:
    """The PIL filter of a ``resize`` name ("bilinear" or "box")."""
    if resize not in RESIZE_FILTERS:
        raise ValueError(f"unknown resize filter {resize!r}: use one of {', '.join(RESIZE_FILTERS)}")
    return RESIZE_FILTERS[resize]


def square(rgb: Image.Image, size: int, resize: str = "bilinear") -> np.ndarray:
    """An RGB image -> (3, size, size) uint8: its central square, resized with ``resize``."""
    resample = check_resize(resize)
    width, height = rgb.size
    if (width, height) != (size, size):
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        # crop first: resizing with box= would let the filter read pixels beyond the square's border
        rgb = rgb.crop((left, top, left + side, top + side)).resize((size, size), resample)
    return np.asarray(rgb).transpose(2, 0, 1)


# Greyscale modes of more than 8 bits (16-bit PNG and TIFF open as these); PIL's convert clips
# them to 255, so a mid-grey 16-bit image came out white.
_WIDE_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def as_rgb(image: Image.Image, size: int) -> Image.Image:
    """An opened image as 8-bit RGB the right way up: JPEGs decoded at the smallest DCT scale still
    >= ``size`` (much faster), the camera's EXIF orientation applied (a phone photo is otherwise
    cropped sideways), greyscale of 16 bits scaled to 8 (not clipped).  ValueError for
    floating-point images, whose range is unknown."""
    image.draft("RGB", (size, size))
    image = ImageOps.exif_transpose(image)
    if image.mode in _WIDE_GREY:
        image = Image.fromarray((np.asarray(image).clip(0, 65535) >> 8).astype(np.uint8))
    elif image.mode == "F":
        raise ValueError("floating-point images have no fixed range: convert them to 8 or 16 bits")
    return image.convert("RGB")


def decode_image(fp: BinaryIO, size: int, resize: str = "bilinear") -> np.ndarray:
    """One image file -> (3, size, size) uint8 RGB (:func:`as_rgb`): its central square, resized
    with ``resize``."""
    with Image.open(fp) as image:
        return square(as_rgb(image, size), size, resize)


def _decode_all(files: _Files, names: list[str], size: int, resize: str, desc: str) -> np.ndarray:
    """Decodes straight into one preallocated (N, 3, size, size) uint8 array."""
    out = np.empty((len(names), 3, size, size), np.uint8)
    for i, name in enumerate(tqdm(names, desc=desc, unit="img", mininterval=1.0)):
        try:
            with files.open(name) as fp:
                out[i] = decode_image(fp, size, resize)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, Image.DecompressionBombError) as e:
            raise ValueError(f"cannot decode the image {files.where(name)} ({e})") from e
    return out


def _cache_dir() -> Path:
    return Path(os.environ.get("COREL_CACHE") or "~/.cache/corel/decoded").expanduser()


def _cached(name: str, image_size: int, resize: str, fingerprint: str, build: Callable[[], ImageData],
            enabled: bool) -> ImageData:
    """``build()``, or its result saved earlier for the same files, ``image_size`` and ``resize``."""
    if not enabled:
        return build()
    key = hashlib.sha256(f"{_CACHE_VERSION}\0{name}\0{image_size}\0{resize}\0{fingerprint}".encode()).hexdigest()[:16]
    path = _cache_dir() / f"{name}-{image_size}px-{resize}-{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                return ImageData(name, f["x_train"], f["y_train"], f["x_test"], f["y_test"],
                                 tuple(str(s) for s in f["class_names"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            warnings.warn(f"ignoring the unreadable cache {path} ({e}); decoding again", stacklevel=3)
    data = build()
    try:
        atomic_write(path, lambda f: np.savez(f, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test,
                                              y_test=data.y_test, class_names=np.array(data.class_names)))
    except OSError as e:
        warnings.warn(f"could not write the cache {path} ({e}); the next load decodes again", stacklevel=3)
    return data


def load_tinyimagenet(root: Path, download: bool, image_size: int, resize: str, cache: bool) -> ImageData:
    """TinyImageNet-200: 500 train and 50 val (= test) images for each of 200 classes, in sorted wnid order."""
    archive = ARCHIVES["tinyimagenet"]
    folder = find_folder(root, archive, "wnids.txt")
    files: _Files = (_FolderFiles(folder) if folder is not None
                     else _ZipFiles(find_archive(root, archive, "tinyimagenet", download), archive.folder))
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
            return ImageData("tinyimagenet", _decode_all(files, train, image_size, resize, "decoding tinyimagenet train"),
                             y_train, _decode_all(files, test, image_size, resize, "decoding tinyimagenet val"),
                             np.array(y_test, np.int64), names)

        return _cached("tinyimagenet", image_size, resize, files.fingerprint(train + test), build, cache)
    finally:
        files.close()


def load_imagefolder(root: Path, image_size: int, resize: str, cache: bool) -> ImageData:
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
        return ImageData("imagefolder", _decode_all(files, train, image_size, resize, "decoding train images"), y_train,
                         _decode_all(files, test, image_size, resize, f"decoding {test_split} images"), y_test, tuple(classes))

    return _cached("imagefolder", image_size, resize, files.fingerprint(train + test), build, cache)


# ----------------------------------------------------------------------------- unlabelled image sets

_DECODE_ERRORS = (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError)
LIST_SUFFIXES = (".txt", ".lst", ".list", ".csv")


def image_paths(source: str | os.PathLike) -> list[Path]:
    """The image files of ``source``: a folder (searched recursively, sorted, hidden files
    skipped) or a list file (one path per line, relative to the list's folder; blank lines and
    lines starting with # ignored; a .csv gives the column headed "path", else its first column).
    ValueError when there are none."""
    source = Path(source)
    if source.is_dir():
        found = [Path(folder) / name for folder, dirs, files in os.walk(source, followlinks=True)
                 for name in files if not any(part.startswith(".") for part in Path(folder, name).relative_to(source).parts)]
        images = sorted(p for p in found if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            what = f"{len(found)} files but no images" if found else "nothing"
            raise ValueError(f"{source} holds {what}: expected image files ({', '.join(IMAGE_EXTENSIONS)})")
        return images
    if source.is_file() and source.suffix.lower() in LIST_SUFFIXES:
        lines = [line.strip() for line in source.read_text(encoding="utf-8-sig").splitlines()]  # Excel's BOM
        lines = [line for line in lines if line and not line.startswith("#")]
        if source.suffix.lower() == ".csv" and lines:  # e.g. the labels file of corel score
            rows = list(csv.reader(lines))
            header = [cell.strip().lower() for cell in rows[0]]
            column = header.index("path") if "path" in header else 0
            lines = [row[column].strip() for row in rows[1 if "path" in header else 0:] if len(row) > column]
        paths = [source.parent / line for line in lines if line]
        if not paths:
            raise ValueError(f"the list file {source} names no images")
        return paths
    if not source.exists():
        raise FileNotFoundError(f"no such folder or file: {source}")
    raise ValueError(f"{source} is neither a folder of images, an .npz nor a list file ({', '.join(LIST_SUFFIXES)})")


def iter_images(paths: list[Path], size: int = 32, resize: str = "bilinear", chunk: int = 1000
                ) -> Iterator[tuple[list[Path], np.ndarray, list[tuple[Path, str]]]]:
    """Decodes ``paths`` ``chunk`` at a time: yields (the paths decoded, their (k, 3, size, size)
    uint8 images, the (path, reason) of those that could not be read).  Memory is one chunk."""
    check_resize(resize)
    told = False
    for start in range(0, len(paths), chunk):
        names, pixels, failed = [], [], []
        for path in paths[start: start + chunk]:
            try:
                with Image.open(path) as image:
                    if image.size != (size, size) and not told:
                        logging.getLogger("corel").info(
                            "images are cropped to their central square and resized to %dx%d (%s); %s is %dx%d",
                            size, size, resize, path, *image.size)
                        told = True
                    pixels.append(square(as_rgb(image, size), size, resize))
                names.append(path)
            except _DECODE_ERRORS as e:
                failed.append((path, f"{type(e).__name__}: {e}"))
        yield names, np.stack(pixels) if pixels else np.zeros((0, 3, size, size), np.uint8), failed


def _npz_images(path: Path, size: int, resize: str) -> tuple[np.ndarray, list[str]]:
    """The images of an .npz: its array "images" or "x", or its only array; any layout
    :func:`corel.detection.images.as_uint8_images` reads, resized to size x size."""
    try:
        with np.load(path, allow_pickle=False) as f:
            key = next((k for k in ("images", "x") if k in f.files), f.files[0] if len(f.files) == 1 else None)
            if key is None:
                raise ValueError(f"{path} holds {len(f.files)} arrays ({', '.join(f.files)}); name the images "
                                 "'images' or 'x', or keep only them")
            images = as_uint8_images(f[key], f"{path}:{key}")
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"cannot read {path} as an .npz of arrays ({e})") from e
    if images.shape[2:] != (size, size) or images.shape[1] != 3:
        rgb = [Image.fromarray(img.transpose(1, 2, 0).squeeze(-1) if img.shape[0] == 1 else img.transpose(1, 2, 0))
               .convert("RGB") for img in images]
        images = np.stack([square(img, size, resize) for img in rgb]) if rgb else images
    return images, [f"{path}[{i}]" for i in range(len(images))]


def iter_source(source: str | os.PathLike, image_size: int = 32, resize: str = "bilinear", chunk: int = 1000
                ) -> tuple[int, Iterator[tuple[list[str], np.ndarray, list[tuple[str, str]]]]]:
    """The images of ``source`` (see :func:`load_images`) ``chunk`` at a time: (how many there are,
    an iterator of (names, (k, 3, size, size) uint8 images, (name, reason) of unreadable files)).
    An .npz is read whole, as one chunk."""
    source = Path(source)
    if source.suffix.lower() == ".npz" and source.is_file():
        images, names = _npz_images(source, image_size, resize)
        return len(names), iter([(names, images, [])])
    paths = image_paths(source)
    chunks = (([str(p) for p in good], pixels, [(str(p), why) for p, why in bad])
              for good, pixels, bad in iter_images(paths, image_size, resize, chunk))
    return len(paths), chunks


def read_images(source: str | os.PathLike, image_size: int = 32, resize: str = "bilinear"
                ) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    """The readable images of ``source`` (see :func:`load_images`) as (N, 3, size, size) uint8, their
    names, and the (name, reason) of the files that could not be read."""
    decoded, names, failed = [], [], []
    for good, pixels, bad in iter_source(source, image_size, resize)[1]:
        decoded.append(pixels)
        names += good
        failed += bad
    return np.concatenate(decoded), names, failed


def unreadable(failed: list[tuple[str, str]], total: int) -> str:
    """The message for files that could not be read: how many, and the first ten with the reason."""
    listed = "; ".join(f"{name} ({why})" for name, why in failed[:10])
    more = f" and {len(failed) - 10} more" if len(failed) > 10 else ""
    return f"{len(failed)} of {total} images could not be read: {listed}{more}"


def load_images(source: str | os.PathLike, image_size: int = 32, resize: str = "bilinear", *,
                errors: str = "raise", return_names: bool = False):
    """Images to fit or score a detector on: (N, 3, image_size, image_size) uint8.

    ``source``: a folder of image files (jpg, png or bmp, any size, RGB or grayscale; each is
    cropped to its central square and resized with ``resize``), a list file of image paths, or an
    .npz.  ``errors``: "raise" (an unreadable file is an error naming every such file) or "skip".
    ``return_names``: also return the names (paths, or ``file.npz[i]``) of the images, in order.
    """
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    images, names, failed = read_images(source, image_size, resize)
    if failed and (errors == "raise" or not names):
        raise ValueError(unreadable(failed, len(failed) + len(names)))
    if len(images) == 0:
        raise ValueError(f"no readable images in {source}")
    return (images, names) if return_names else images
