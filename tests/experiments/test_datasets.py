"""Dataset loading: every format from tiny synthetic files built here (no network, no real data)."""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import socket
import tarfile
import threading
import time
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED_DATA
from corel.experiments.datasets import CIFAR10_CLASSES, CIFAR100_FINE_TO_COARSE, DATASETS, ImageData, load_dataset
from corel.experiments.datasets import download, image_files

# The CIFAR-100 label names and superclass table as published with the dataset: an oracle for the
# fine -> coarse map that does not share its source.
FINE_NAMES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
SUPERCLASSES = {
    "aquatic_mammals": "beaver dolphin otter seal whale",
    "fish": "aquarium_fish flatfish ray shark trout",
    "flowers": "orchid poppy rose sunflower tulip",
    "food_containers": "bottle bowl can cup plate",
    "fruit_and_vegetables": "apple mushroom orange pear sweet_pepper",
    "household_electrical_devices": "clock keyboard lamp telephone television",
    "household_furniture": "bed chair couch table wardrobe",
    "insects": "bee beetle butterfly caterpillar cockroach",
    "large_carnivores": "bear leopard lion tiger wolf",
    "large_man-made_outdoor_things": "bridge castle house road skyscraper",
    "large_natural_outdoor_scenes": "cloud forest mountain plain sea",
    "large_omnivores_and_herbivores": "camel cattle chimpanzee elephant kangaroo",
    "medium_mammals": "fox porcupine possum raccoon skunk",
    "non-insect_invertebrates": "crab lobster snail spider worm",
    "people": "baby boy girl man woman",
    "reptiles": "crocodile dinosaur lizard snake turtle",
    "small_mammals": "hamster mouse rabbit shrew squirrel",
    "trees": "maple_tree oak_tree palm_tree pine_tree willow_tree",
    "vehicles_1": "bicycle bus motorcycle pickup_truck train",
    "vehicles_2": "lawn_mower rocket streetcar tank tractor",
}
COARSE_NAMES = sorted(SUPERCLASSES)
COARSE_OF_FINE = {f: COARSE_NAMES.index(c) for c, fines in SUPERCLASSES.items() for f in fines.split()}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Caches and default data folders inside tmp_path; no proxy between the tests and 127.0.0.1."""
    monkeypatch.setenv("COREL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COREL_DATA", str(tmp_path / "default-data"))
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


# ----------------------------------------------------------------------------- CIFAR


def _cifar_rows(images_hwc: np.ndarray) -> np.ndarray:
    """The documented CIFAR row layout: 1024 red, then 1024 green, then 1024 blue values, row-major."""
    return np.stack([np.concatenate([im[:, :, c].ravel() for c in range(3)]) for im in images_hwc])


def _dump(path: Path, obj) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))  # the release was written by Python 2's cPickle


def _write_cifar10(folder: Path, rng) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True)
    x = rng.integers(0, 256, (5 * 3 + 4, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, len(x))
    for i in range(5):
        part = slice(3 * i, 3 * i + 3)
        _dump(folder / f"data_batch_{i + 1}", {b"batch_label": b"training batch", b"data": _cifar_rows(x[part]),
                                               b"labels": y[part].tolist(), b"filenames": [b"a.png"] * 3})
    _dump(folder / "test_batch", {b"data": _cifar_rows(x[15:]), b"labels": y[15:].tolist()})
    _dump(folder / "batches.meta", {b"label_names": [n.encode() for n in CIFAR10_CLASSES],
                                    b"num_cases_per_batch": 3})
    return {"x_train": x[:15].transpose(0, 3, 1, 2), "y_train": y[:15], "x_test": x[15:].transpose(0, 3, 1, 2),
            "y_test": y[15:]}


def _targz(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def _assert_loaded(data: ImageData, expected: dict[str, np.ndarray]) -> None:
    for key, value in expected.items():
        got = getattr(data, key)
        assert got.dtype == (np.uint8 if key.startswith("x") else np.int64)
        np.testing.assert_array_equal(got, value)


@pytest.mark.parametrize("layout", ["folder", "inside-folder", "archive", "archive-path"])
def test_cifar10_release_layouts(tmp_path, rng, layout):
    expected = _write_cifar10(tmp_path / "src" / "cifar-10-batches-py", rng)
    data_dir = {"folder": tmp_path / "src", "inside-folder": tmp_path / "src" / "cifar-10-batches-py"}.get(layout)
    if data_dir is None:
        (tmp_path / "d").mkdir()
        archive = _targz(tmp_path / "src" / "cifar-10-batches-py", tmp_path / "d" / "cifar-10-python.tar.gz")
        data_dir = archive if layout == "archive-path" else archive.parent
    data = load_dataset("cifar10", data_dir, download=False)
    _assert_loaded(data, expected)
    assert data.x_train.shape == (15, 3, 32, 32) and data.x_test.shape == (4, 3, 32, 32)
    assert data.class_names == CIFAR10_CLASSES and data.num_classes == 10
    assert data.x_train.flags.c_contiguous


def test_cifar10_npz_copy(tmp_path, rng):
    x = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    y = np.array([0, 1, 2, 9, 9, 3], np.uint8)
    np.savez(tmp_path / "cifar10.npz", x_train=x[:4], y_train=y[:4], x_test=x[4:], y_test=y[4:])
    data = load_dataset("cifar10", tmp_path, download=False)
    _assert_loaded(data, {"x_train": x[:4].transpose(0, 3, 1, 2), "y_train": y[:4], "y_test": y[4:]})
    assert data.class_names == CIFAR10_CLASSES


def _write_cifar100(folder: Path, rng, sizes=(12, 5)) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True)
    expected = {}
    for part, n in zip(("train", "test"), sizes):
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        fine = rng.integers(0, 100, n)
        coarse = [COARSE_OF_FINE[FINE_NAMES[f]] for f in fine]
        _dump(folder / part, {b"data": _cifar_rows(x), b"fine_labels": fine.tolist(), b"coarse_labels": coarse})
        expected[f"x_{part}"], expected[f"fine_{part}"] = x.transpose(0, 3, 1, 2), fine
        expected[f"coarse_{part}"] = np.array(coarse)
    _dump(folder / "meta", {b"fine_label_names": [n.encode() for n in FINE_NAMES],
                            b"coarse_label_names": [n.encode() for n in COARSE_NAMES]})
    return expected


@pytest.mark.parametrize("archived", [False, True])
def test_cifar100_fine_and_coarse(tmp_path, rng, archived):
    expected = _write_cifar100(tmp_path / "cifar-100-python", rng)
    if archived:
        (tmp_path / "d").mkdir()
        data_dir = _targz(tmp_path / "cifar-100-python", tmp_path / "d" / "cifar-100-python.tar.gz").parent
    else:
        data_dir = tmp_path
    fine = load_dataset("cifar100", data_dir, download=False)
    coarse = load_dataset("cifar20", data_dir, download=False)
    for data, kind in ((fine, "fine"), (coarse, "coarse")):
        _assert_loaded(data, {"x_train": expected["x_train"], "x_test": expected["x_test"],
                              "y_train": expected[f"{kind}_train"], "y_test": expected[f"{kind}_test"]})
    assert fine.class_names == tuple(FINE_NAMES) and fine.num_classes == 100
    assert coarse.class_names == tuple(COARSE_NAMES) and coarse.num_classes == 20 and coarse.name == "cifar20"


def test_superclass_map_is_the_published_table():
    assert len(FINE_NAMES) == 100 and len(COARSE_OF_FINE) == 100
    assert list(CIFAR100_FINE_TO_COARSE) == [COARSE_OF_FINE[name] for name in FINE_NAMES]
    assert np.bincount(CIFAR100_FINE_TO_COARSE).tolist() == [5] * 20


def test_cifar100_coarse_labels_must_agree_with_the_map(tmp_path, rng):
    folder = tmp_path / "cifar-100-python"
    _write_cifar100(folder, rng)
    batch = pickle.loads((folder / "test").read_bytes(), encoding="bytes")
    batch[b"coarse_labels"][3] = (batch[b"coarse_labels"][3] + 1) % 20
    _dump(folder / "test", batch)
    with pytest.raises(ValueError, match="disagree with the published CIFAR-100 superclasses"):
        load_dataset("cifar20", tmp_path, download=False)


def test_truncated_or_garbage_archive_names_the_file(tmp_path, rng):
    _write_cifar10(tmp_path / "src" / "cifar-10-batches-py", rng)
    good = _targz(tmp_path / "src" / "cifar-10-batches-py", tmp_path / "good.tar.gz").read_bytes()
    for content in (good[: len(good) // 2], b"not an archive at all"):
        (tmp_path / "d").mkdir(exist_ok=True)
        archive = tmp_path / "d" / "cifar-10-python.tar.gz"
        archive.write_bytes(content)
        with pytest.raises(ValueError, match="cifar-10-python.tar.gz is corrupt or truncated"):
            load_dataset("cifar10", tmp_path / "d", download=False)


def test_pickles_cannot_run_code(tmp_path, rng):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar10(folder, rng)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    _dump(folder / "batches.meta", {b"label_names": Exploit()})
    with pytest.raises(ValueError, match="refusing to load"):
        load_dataset("cifar10", tmp_path, download=False)
    assert not marker.exists()


# ----------------------------------------------------------------------------- image files


def _blocky(rng, cells: int, cell: int, channels: int = 3) -> np.ndarray:
    """A (cells*cell)^2 image of constant cell x cell squares (JPEG-friendly, exactly box-downscalable)."""
    small = rng.integers(20, 236, (cells, cells, channels), dtype=np.uint8)
    return np.kron(small, np.ones((cell, cell, 1), np.uint8)).squeeze()


def _write_tinyimagenet(root: Path, rng) -> dict:
    wnids = ["n03", "n01", "n02"]  # wnids.txt is not sorted; classes come in sorted order
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\tbullfrog\nn03\tcat, true cat\nn99\tx\n")
    small = {}
    for wnid in wnids:
        (root / "train" / wnid / "images").mkdir(parents=True)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("ignored")
        for i in range(2):
            image = _blocky(rng, 8, 8)
            small[f"train/{wnid}/images/{wnid}_{i}.JPEG"] = image[::2, ::2]  # the 32x32 box downscale
            Image.fromarray(image).save(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", quality=95)
    gray = _blocky(rng, 8, 8, channels=1)
    Image.fromarray(gray, "L").save(root / "val" / "images" / "val_1.JPEG", quality=95)
    colour = _blocky(rng, 8, 8)
    Image.fromarray(colour).save(root / "val" / "images" / "val_0.JPEG", quality=95)
    (root / "val" / "val_annotations.txt").write_text("val_1.JPEG\tn02\t0\t0\t10\t10\nval_0.JPEG\tn03\t1\t2\t3\t4\n")
    return {"train": small, "test": [np.repeat(gray[::2, ::2, None], 3, axis=2), colour[::2, ::2]]}


@pytest.mark.parametrize("zipped", [False, True])
def test_tinyimagenet_folder_and_zip(tmp_path, rng, zipped):
    root = tmp_path / "tiny-imagenet-200"
    expected = _write_tinyimagenet(root, rng)
    data_dir = tmp_path
    if zipped:
        data_dir = tmp_path / "z"
        data_dir.mkdir()
        with zipfile.ZipFile(data_dir / "tiny-imagenet-200.zip", "w") as z:
            for path in sorted(root.rglob("*")):
                z.write(path, path.relative_to(tmp_path).as_posix())
    data = load_dataset("tinyimagenet", data_dir, download=False)
    assert data.class_names == ("goldfish", "bullfrog", "cat")
    assert data.x_train.shape == (6, 3, 32, 32) and data.x_test.shape == (2, 3, 32, 32)
    assert data.y_train.tolist() == [0, 0, 1, 1, 2, 2] and data.y_test.tolist() == [1, 2]
    want_train = np.stack([expected["train"][name].transpose(2, 0, 1) for name in sorted(expected["train"])])
    want_test = np.stack([im.transpose(2, 0, 1) for im in expected["test"]])
    for got, want in ((data.x_train, want_train), (data.x_test, want_test)):
        error = np.abs(got.astype(int) - want)
        assert error.mean() < 3 and error.max() < 32  # JPEG (quality 95, chroma subsampled) at colour edges


def test_tinyimagenet_zip_and_folder_agree_exactly(tmp_path, rng):
    root = tmp_path / "tiny-imagenet-200"
    _write_tinyimagenet(root, rng)
    with zipfile.ZipFile(tmp_path / "tiny-imagenet-200.zip", "w") as z:
        for path in sorted(root.rglob("*")):
            z.write(path, path.relative_to(tmp_path).as_posix())
    from_folder = load_dataset("tinyimagenet", root, download=False, image_size=16, cache=False)
    from_zip = load_dataset("tinyimagenet", tmp_path / "tiny-imagenet-200.zip", download=False, image_size=16)
    np.testing.assert_array_equal(from_folder.x_train, from_zip.x_train)
    np.testing.assert_array_equal(from_folder.x_test, from_zip.x_test)
    assert from_zip.x_train.shape == (6, 3, 16, 16)


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _central_box_mean(image: np.ndarray, size: int) -> np.ndarray:
    """Oracle: the central square, averaged over (side/size)^2 blocks, as (3, size, size)."""
    h, w = image.shape[:2]
    side = min(h, w)
    square = image[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    if square.ndim == 2:
        square = np.repeat(square[:, :, None], 3, axis=2)
    k = side // size
    return square.reshape(size, k, size, k, 3).mean(axis=(1, 3)).transpose(2, 0, 1)


def _central_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """Oracle: the central square, resized by torch's antialiased bilinear filter (made to match
    PIL's, which torchvision's Resize uses), as (3, size, size) floats."""
    h, w = image.shape[:2]
    side = min(h, w)
    square = image[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    if square.ndim == 2:
        square = np.repeat(square[:, :, None], 3, axis=2)
    t = torch.from_numpy(square.astype(np.float64)).permute(2, 0, 1)[None]
    return torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", antialias=True,
                                           align_corners=False)[0].numpy()


def _write_imagefolder(root: Path, rng, test_split: str = "val") -> dict:
    shapes = {"train/zebra/a.png": (8, 12, 3), "train/zebra/b.PNG": (12, 8, 3), "train/ant/c.png": (8, 8),
              "train/ant/sub/d.png": (16, 16, 3), f"{test_split}/zebra/e.png": (8, 8, 3)}
    images = {}
    for name, shape in shapes.items():
        images[name] = rng.integers(0, 256, shape, dtype=np.uint8)
        _png(root / name, images[name])
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    (root / "train" / "ant" / "._c.png").write_bytes(b"macOS resource fork, not an image")
    (root / "train" / "empty").mkdir()  # a class folder without images
    (root / "train" / ".cache").mkdir()
    return images


def test_imagefolder_crops_resizes_and_labels(tmp_path, rng):
    root = tmp_path / "imgs"
    images = _write_imagefolder(root, rng)
    (root / "train" / "empty").rmdir()
    data = load_dataset("imagefolder", root, image_size=4, resize="box")
    assert data.class_names == ("ant", "zebra")
    order = ["train/ant/c.png", "train/ant/sub/d.png", "train/zebra/a.png", "train/zebra/b.PNG"]
    assert data.y_train.tolist() == [0, 0, 1, 1] and data.y_test.tolist() == [1]
    want = np.stack([_central_box_mean(images[n], 4) for n in order])
    assert np.abs(data.x_train - want).max() <= 1  # rounding in Pillow's fixed-point filter
    assert np.abs(data.x_test[0] - _central_box_mean(images["val/zebra/e.png"], 4)).max() <= 1
    # the default is the authors' filter: antialiased bilinear, as torchvision's Resize on PIL images
    bilinear = load_dataset("imagefolder", root, image_size=4)
    want = np.stack([_central_bilinear(images[n], 4) for n in order])
    assert np.abs(bilinear.x_train - want).max() <= 2  # Pillow's fixed-point arithmetic and rounding
    assert np.abs(bilinear.x_train.astype(int) - data.x_train).max() > 2  # and it is not the box filter


def test_imagefolder_test_split_upscaling_and_errors(tmp_path, rng):
    root = tmp_path / "imgs"
    _write_imagefolder(root, rng, test_split="test")
    with pytest.raises(ValueError, match="hold no images.*empty"):
        load_dataset("imagefolder", root)
    (root / "train" / "empty").rmdir()
    data = load_dataset("imagefolder", root, image_size=24)  # upscaled from 8..16 pixels
    assert data.x_train.shape == (4, 3, 24, 24) and data.x_test.shape == (1, 3, 24, 24)
    _png(root / "test" / "unicorn" / "u.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="classes without training folder: unicorn"):
        load_dataset("imagefolder", root)
    (root / "test" / "unicorn" / "u.png").write_bytes(b"\x89PNG broken")
    (root / "test" / "unicorn" / "u.png").rename(root / "train" / "zebra" / "broken.png")
    with pytest.raises(ValueError, match="cannot decode the image .*broken.png"):
        load_dataset("imagefolder", root)
    (tmp_path / "only-train" / "train" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no val/ or test/"):
        load_dataset("imagefolder", tmp_path / "only-train")
    with pytest.raises(ValueError, match="needs data_dir"):
        load_dataset("imagefolder")


def test_decoded_images_are_cached_until_the_files_change(tmp_path, rng, monkeypatch):
    root = tmp_path / "imgs"
    _write_imagefolder(root, rng)
    (root / "train" / "empty").rmdir()
    first = load_dataset("imagefolder", root, image_size=4)
    assert len(list((tmp_path / "cache").glob("imagefolder-4px-*.npz"))) == 1

    def no_decoding(*args):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(image_files, "decode_image", no_decoding)
    again = load_dataset("imagefolder", root, image_size=4)
    np.testing.assert_array_equal(first.x_train, again.x_train)
    np.testing.assert_array_equal(first.y_test, again.y_test)
    assert again.class_names == first.class_names
    with pytest.raises(AssertionError, match="decoded although cached"):
        load_dataset("imagefolder", root, image_size=8)  # another size is another cache entry
    with pytest.raises(AssertionError, match="decoded although cached"):
        load_dataset("imagefolder", root, image_size=4, resize="box")  # so is another filter
    _png(root / "val" / "zebra" / "e.png", np.zeros((9, 9, 3), np.uint8))  # the files changed
    with pytest.raises(AssertionError, match="decoded although cached"):
        load_dataset("imagefolder", root, image_size=4)
    with pytest.raises(AssertionError, match="decoded although cached"):
        load_dataset("imagefolder", root, image_size=4, cache=False)


# ----------------------------------------------------------------------------- .npz files and digits


@pytest.mark.parametrize("layout", ["hwc", "chw", "gray", "float"])
def test_npz_layouts(tmp_path, rng, layout):
    x = rng.integers(0, 256, (7, 5, 6, 3), dtype=np.uint8)  # HWC, 5 x 6 pixels
    channels_first = x.transpose(0, 3, 1, 2)
    stored, want = {"hwc": (x, channels_first), "chw": (channels_first, channels_first),
                    "gray": (x[..., 0], x[..., 0][:, None]), "float": (x / np.float32(255), channels_first)}[layout]
    y = np.array([2, 0, 1, 2, 0, 1, 1])
    np.savez(tmp_path / "mine.npz", x_train=stored[:4], y_train=y[:4], x_test=stored[4:], y_test=y[4:])
    data = load_dataset("npz", tmp_path)
    _assert_loaded(data, {"x_train": want[:4], "x_test": want[4:], "y_train": y[:4], "y_test": y[4:]})
    assert data.class_names == ("0", "1", "2")
    named = tmp_path / "named.npz"
    np.savez(named, x_train=stored[:4], y_train=y[:4], x_test=stored[4:], y_test=y[4:],
             class_names=np.array(["a", "b", "c", "d"]))
    assert load_dataset("npz", named).class_names == ("a", "b", "c", "d")


def test_npz_channel_axis_of_tiny_images(tmp_path, rng):
    gray = rng.integers(0, 256, (2, 3, 3), dtype=np.uint8)  # both 1 and 3 look like channel counts
    for stored in (gray[:, None], gray[..., None]):  # (N, 1, 3, 3) and (N, 3, 3, 1)
        np.savez(tmp_path / "t.npz", x_train=stored, y_train=[0, 1], x_test=stored, y_test=[1, 0])
        np.testing.assert_array_equal(load_dataset("npz", tmp_path / "t.npz").x_train, gray[:, None])


@pytest.mark.parametrize("bad, message", [
    ({"x_train": np.full((2, 4, 4), 1.5)}, r"float images must lie in \[0, 1\]"),
    ({"x_train": np.full((2, 4, 4), np.nan)}, "NaN or inf"),
    ({"x_train": np.full((2, 4, 4), 256, np.int32)}, "must lie in 0..255"),
    ({"x_train": np.zeros((2, 4, 4, 5), np.uint8)}, "cannot tell the channel axis"),
    ({"x_train": np.zeros((2, 3, 3, 3), np.uint8)}, "cannot tell the channel axis"),
    ({"x_train": np.zeros((2, 3, 4, 4, 1), np.uint8)}, "got shape"),
    ({"y_train": np.array([0, 1, 2])}, "expected 2 labels"),
    ({"y_train": np.array([0, -1])}, "labels must be >= 0"),
    ({"y_test": np.array([0.5])}, "labels must be integers"),
    ({"class_names": np.array(["only-one"])}, "labels outside 0..0"),
])
def test_npz_bad_contents(tmp_path, bad, message):
    arrays = {"x_train": np.zeros((2, 4, 4), np.uint8), "y_train": np.array([0, 1]),
              "x_test": np.zeros((1, 4, 4), np.uint8), "y_test": np.array([1])}
    np.savez(tmp_path / "bad.npz", **{**arrays, **bad})
    with pytest.raises(ValueError, match=message):
        load_dataset("npz", tmp_path / "bad.npz")


def test_npz_file_errors(tmp_path):
    with pytest.raises(ValueError, match="exactly one .npz file, found 0"):
        load_dataset("npz", tmp_path)
    np.savez(tmp_path / "a.npz", x_train=np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="lacks the arrays y_train, x_test, y_test"):
        load_dataset("npz", tmp_path)
    np.savez(tmp_path / "b.npz", x=np.zeros(1))
    with pytest.raises(ValueError, match="exactly one .npz file, found 2: a.npz, b.npz"):
        load_dataset("npz", tmp_path)
    (tmp_path / "c.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read .*c.npz"):
        load_dataset("npz", tmp_path / "c.npz")


def test_digits_split():
    from sklearn.datasets import load_digits

    data = load_dataset("digits")
    assert data.x_train.shape == (1078, 1, 8, 8) and data.x_test.shape == (719, 1, 8, 8)
    assert data.class_names == tuple("0123456789")
    source = load_digits()
    per_class = np.bincount(source.target)  # 174..183
    assert np.abs(np.bincount(data.y_train) - 0.6 * per_class).max() <= 1  # stratified
    # Together the splits are exactly sklearn's images, scaled 0..16 -> 0..255, each with its label.
    scaled = np.rint(source.images * 255 / 16).astype(np.uint8).reshape(len(source.images), -1)
    ours = np.concatenate([data.x_train, data.x_test]).reshape(len(scaled), -1)
    key = lambda x, y: sorted(zip(map(bytes, x), y.tolist()))  # noqa: E731
    assert key(ours, np.concatenate([data.y_train, data.y_test])) == key(scaled, source.target)
    assert ours.max() == 255
    again = load_dataset("digits")
    np.testing.assert_array_equal(again.x_train, data.x_train)
    np.testing.assert_array_equal(again.y_test, data.y_test)


@pytest.mark.skipif(not (SHARED_DATA / "cifar10.npz").is_file(), reason="shared CIFAR-10 copy not present")
def test_real_cifar10_copy():
    data = load_dataset("cifar10", SHARED_DATA, download=False)
    assert data.x_train.shape == (50000, 3, 32, 32) and data.x_test.shape == (10000, 3, 32, 32)
    assert np.bincount(data.y_train).tolist() == [5000] * 10
    assert np.bincount(data.y_test).tolist() == [1000] * 10
    assert data.y_train[:5].tolist() == [6, 9, 9, 4, 1] and data.y_test[:5].tolist() == [3, 8, 8, 0, 6]
    assert data.class_names[0] == "airplane" and data.class_names[9] == "truck"


# ----------------------------------------------------------------------------- downloads


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _point_archive(monkeypatch, name: str, url: str, md5: str | None = None) -> None:
    old = download.ARCHIVES[name]
    monkeypatch.setitem(download.ARCHIVES, name, download.Archive(old.filename, url, md5 or old.md5, old.folder))


@pytest.fixture
def http_folder(tmp_path):
    """Serves tmp_path/'www' on 127.0.0.1; yields its base URL."""
    (tmp_path / "www").mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path / "www")))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/cifar-10-python.tar.gz",
                                 "https://no-such-host.invalid/cifar-10-python.tar.gz"])
def test_offline_download_fails_fast_and_says_where_to_put_files(tmp_path, monkeypatch, url):
    _point_archive(monkeypatch, "cifar10", url.format(port=_closed_port()))
    start = time.perf_counter()
    with pytest.raises(ValueError, match="downloading .* failed") as error:
        load_dataset("cifar10", tmp_path / "data")
    assert time.perf_counter() - start < 10
    message = str(error.value)
    assert "cifar-10-python.tar.gz" in message and "cifar-10-batches-py/" in message
    assert str(tmp_path / "data") in message and "cifar10.npz" in message


def test_no_download_means_no_network(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("network used")

    monkeypatch.setattr(download, "_check_reachable", forbidden)
    monkeypatch.setattr(download.urllib.request, "urlopen", forbidden)
    for name, filename in (("cifar100", "cifar-100-python.tar.gz"), ("tinyimagenet", "tiny-imagenet-200.zip")):
        with pytest.raises(ValueError, match=rf"download=False\). Put {filename}"):
            load_dataset(name, tmp_path, download=False)


def test_download_is_checked_and_atomic(tmp_path, rng, monkeypatch, http_folder):
    _write_cifar10(tmp_path / "src" / "cifar-10-batches-py", rng)
    archive = _targz(tmp_path / "src" / "cifar-10-batches-py", tmp_path / "www" / "cifar-10-python.tar.gz")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    data_dir = tmp_path / "data"

    _point_archive(monkeypatch, "cifar10", f"{http_folder}/cifar-10-python.tar.gz", md5="0" * 32)
    with pytest.raises(ValueError, match=f"corrupt: md5 {md5}, expected 0{{32}}.*cifar-10-python.tar.gz"):
        load_dataset("cifar10", data_dir)
    assert list(data_dir.iterdir()) == []  # no partial or unverified file left behind

    _point_archive(monkeypatch, "cifar10", f"{http_folder}/missing.tar.gz", md5=md5)
    with pytest.raises(ValueError, match="downloading .* failed.*404"):
        load_dataset("cifar10", data_dir)

    _point_archive(monkeypatch, "cifar10", f"{http_folder}/cifar-10-python.tar.gz", md5=md5)
    calls = []  # the archive's bytes reach the disk before its name does
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync") or fsync(fd))
    monkeypatch.setattr(os, "replace", lambda *a: calls.append("replace") or replace(*a))
    downloaded = load_dataset("cifar10", data_dir)
    assert calls[:2] == ["fsync", "replace"]
    assert [p.name for p in data_dir.iterdir()] == ["cifar-10-python.tar.gz"]
    archive.unlink()  # a second load uses the saved copy
    np.testing.assert_array_equal(load_dataset("cifar10", data_dir).x_train, downloaded.x_train)


def test_stalled_server_times_out(tmp_path, monkeypatch):
    with socket.socket() as listener:  # accepts connections (kernel backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        _point_archive(monkeypatch, "cifar10", f"http://127.0.0.1:{listener.getsockname()[1]}/c.tar.gz")
        monkeypatch.setattr(download, "_READ_TIMEOUT", 0.5)
        start = time.perf_counter()
        with pytest.raises(ValueError, match="downloading .* failed.*timed out"):
            load_dataset("cifar10", tmp_path / "data")
        assert time.perf_counter() - start < 5
    assert list((tmp_path / "data").iterdir()) == []


# ----------------------------------------------------------------------------- API


def test_unknown_name_lists_the_datasets():
    with pytest.raises(ValueError, match="choose one of cifar10, cifar100, .*digits"):
        load_dataset("mnist")
    assert set(DATASETS) == {"cifar10", "cifar100", "cifar20", "tinyimagenet", "imagefolder", "npz", "digits"}
