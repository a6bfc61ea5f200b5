"""Novelty detection on your own images: fit a detector on a folder of normal images, score
others, look at a report.  Behind ``corel fit`` and ``corel score``.

The ``.corel`` model file holds the fitted detector (backbone included), how images are prepared
for it (size, resize filter), its training scores and thumbnails of the fitted images, under a
format name, a version and a checksum (see :mod:`corel._io`).
"""

from __future__ import annotations

import csv
import heapq
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from corel._io import load_checked, save_checked
from corel.detection.backbone import Backbone, resolve_backbone
from corel.detection.detector import OneClassDetector
from corel.experiments import reports
from corel.experiments.datasets.image_files import iter_source, read_images, unreadable

FORMAT = "corel-model"
VERSION = 1
THUMBNAILS = 48  # fitted images kept in the model file, for reports


@dataclass
class NoveltyModel:
    """A fitted detector with everything needed to score new image files the same way."""

    detector: OneClassDetector
    image_size: int
    resize: str
    train_scores: np.ndarray
    thumbnails: np.ndarray  # uint8 (k, 3, size, size), the first fitted images
    names: list[str] = field(default_factory=list)  # every fitted image (files: absolute paths)

    def save(self, path: str | os.PathLike) -> None:
        save_checked({"detector": self.detector.to_dict(), "image_size": self.image_size, "resize": self.resize,
                      "train_scores": torch.from_numpy(self.train_scores),
                      "thumbnails": torch.from_numpy(np.ascontiguousarray(self.thumbnails)),
                      "names": list(self.names)}, path, format=FORMAT, version=VERSION)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NoveltyModel":
        content = load_checked(path, format=FORMAT, version=VERSION, what="corel model file (written by corel fit)")
        try:
            return cls(OneClassDetector.from_dict(content["detector"], where=str(path)), int(content["image_size"]),
                       str(content["resize"]), content["train_scores"].numpy(), content["thumbnails"].numpy(),
                       [str(name) for name in content["names"]])
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{path} is not a valid corel model file ({type(e).__name__}: {e})") from e


def _image_size(backbone: Backbone) -> int:
    shape = backbone.config.input_shape
    if len(shape) != 3 or shape[0] != 3 or shape[1] != shape[2]:
        raise ValueError(f"image files need a backbone of square RGB images; this one takes inputs of shape {shape}")
    return shape[1]


def fit(source: str | os.PathLike, backbone: Backbone | str | os.PathLike = "cifar10", *, contamination: float = 0.1,
        radius: float | None = None, resize: str = "bilinear", strict: bool = False,
        device: str | None = None) -> tuple[NoveltyModel, list[tuple[str, str]]]:
    """Fits a detector on the images of ``source`` (a folder, a list file or an .npz).  Returns the
    model and the (name, reason) of the files that could not be read (an error when ``strict``)."""
    backbone = resolve_backbone(backbone, device or "cpu")
    size = _image_size(backbone)
    images, names, failed = read_images(source, size, resize)
    _refuse_failures(failed, strict, len(names))
    if Path(source).is_dir() or Path(source).suffix.lower() != ".npz":  # files: absolute, so that scoring
        names = [os.path.abspath(name) for name in names]  # them later from another folder is recognised
    if len(images) < 2:
        raise ValueError(f"need at least 2 readable images to fit, found {len(images)} in {source}")
    detector = OneClassDetector(backbone, radius=radius, contamination=contamination, device=device).fit(images)
    return NoveltyModel(detector, size, resize, detector.train_scores_, images[:THUMBNAILS], names), failed


def _refuse_failures(failed: list[tuple[str, str]], strict: bool, readable: int) -> None:
    if failed and (strict or readable == 0):
        raise ValueError(unreadable(failed, len(failed) + readable))


@dataclass
class Scored:
    """Scores of a set of images, with the most novel and most normal of them kept for a report."""

    names: list[str]
    scores: np.ndarray
    failed: list[tuple[str, str]]
    extremes: dict[int, np.ndarray]  # index -> uint8 image, for the `keep` lowest and highest scores


def score(model: NoveltyModel, source: str | os.PathLike, *, chunk: int = 1000, strict: bool = False,
          keep: int = 12, progress: bool = True) -> Scored:
    """Scores the images of ``source`` ``chunk`` at a time: memory holds one chunk of images and
    the ``keep`` most novel and most normal ones, whatever the number of images."""
    from tqdm.auto import tqdm

    det = model.detector
    total, chunks = iter_source(source, model.image_size, model.resize, chunk)
    names, scores, failed = [], [], []
    lowest: list = []  # heaps of (key, index, image): the most novel and the most normal
    highest: list = []
    with tqdm(total=total, unit="img", desc="scoring", disable=not progress, leave=False) as bar:
        for good, pixels, bad in chunks:
            failed += bad
            if len(pixels):
                values = det.score_samples(pixels)
                for value, image in zip(values, pixels):
                    index = len(scores)
                    scores.append(float(value))
                    for heap, key in ((lowest, -value), (highest, value)):
                        if len(heap) < keep or (key, -index) > heap[0][:2]:
                            # a copy: a view would keep its whole chunk of images alive
                            item = (key, -index, image.copy())
                            (heapq.heappush if len(heap) < keep else heapq.heapreplace)(heap, item)
                names += good
            bar.update(len(good) + len(bad))
    _refuse_failures(failed, strict, len(scores))
    extremes = {-i: img for _, i, img in lowest + highest}
    return Scored(names, np.asarray(scores, dtype=np.float64), failed, extremes)


def write_scores(scored: Scored, threshold: float, path: str | os.PathLike) -> None:
    """CSV: path, score, normal/novel, rank (1 = most novel; ties in file order); unreadable images
    follow with an empty score and their reason."""
    order = np.argsort(scored.scores, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(1, len(order) + 1)
    # every digit (.17g round-trips a float64): ':g' kept six, so counts above a million were rounded and tied
    rows = [[name, f"{value:.17g}", "normal" if value >= threshold else "novel", int(r)]
            for name, value, r in zip(scored.names, scored.scores, rank)]
    rows += [[name, "", f"unreadable: {why}", ""] for name, why in scored.failed]
    reports.write_csv(path, ["path", "score", "prediction", "rank"], rows)


_TRUTH = {"normal": True, "inlier": True, "1": True, "+1": True,
          "novel": False, "outlier": False, "anomaly": False, "anomalous": False, "-1": False}


def read_label_file(path: str | os.PathLike) -> dict[str, bool]:
    """The labels of a CSV with columns path and label (any case; a UTF-8 byte-order mark, as Excel
    writes, is skipped) -> {path as written: True = normal}.  A label is normal/novel (also
    inlier/outlier, anomaly, anomalous) or scikit-learn's 1/-1 (1 = normal); 0 and true/false are
    refused as ambiguous (anomaly datasets write 1 for an anomaly).  ValueError otherwise."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [cell.strip().lower() for cell in next(reader, [])]
        if not {"path", "label"} <= set(header):
            raise ValueError(f"{path} must be a CSV with the columns path and label (its header: {', '.join(header)})")
        at, label_at = header.index("path"), header.index("label")
        given: dict[str, bool] = {}
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            name, value = (row[at].strip() if len(row) > at else ""), (row[label_at] if len(row) > label_at else "")
            if value.strip().lower() not in _TRUTH:
                raise ValueError(f"{path}: label {value!r} of {name} is not one of normal/novel "
                                 "(or scikit-learn's 1 = normal, -1 = novel; 0 and true/false are ambiguous)")
            given[name] = _TRUTH[value.strip().lower()]
    return given


def read_labels(path: str | os.PathLike, names: list[str]) -> np.ndarray:
    """Labels of scored images ``names`` from a label file (:func:`read_label_file`) -> (N,) bool,
    True = normal.  A path in the CSV is relative to the CSV's folder (or absolute); an image is
    matched by its path, else by its file name where only one row has that name.  ValueError for
    an image without a label, or whose name several rows share."""
    given = read_label_file(path)
    folder = Path(path).parent
    by_path = {(folder / key).resolve(): value for key, value in given.items()}
    by_name: dict[str, list[bool]] = {}
    for key, value in given.items():
        by_name.setdefault(Path(key).name, []).append(value)
    labels = []
    for name in names:
        found = by_path.get(Path(name).resolve())
        if found is None:
            same = by_name.get(Path(name).name, [])
            if len(same) > 1:
                raise ValueError(f"{path}: {len(same)} rows are named {Path(name).name} and none is the path of "
                                 f"{name}: give paths relative to the CSV's folder ({folder})")
            if not same:
                raise ValueError(f"{path} has no label for {name} (paths are relative to the CSV's folder, {folder})")
            found = same[0]
        labels.append(found)
    return np.asarray(labels, dtype=bool)


def write_report(model: NoveltyModel, path: str | os.PathLike, scored: Scored | None = None,
                 labels: np.ndarray | None = None) -> Path:
    """The HTML report (:func:`corel.experiments.reports.html`) of ``scored`` images, or without
    them of the fitted images' own (leave-one-out) scores."""
    threshold = model.detector.offset_
    if scored is None:
        return reports.html(path, model.train_scores, threshold, names=model.names,
                            images=dict(enumerate(model.thumbnails)), fitted=model.thumbnails,
                            title="corel: the fitted images, each scored against the others")
    return reports.html(path, scored.scores, threshold, names=scored.names, images=scored.extremes,
                        fitted=model.thumbnails, labels=labels, title="corel novelty report")
