"""The paper's evaluation protocol: one-class AUROC per class from n samples, over random draws.

For every class c of a dataset and each draw, a detector is fitted on n random training images of c
and scores the whole test split (or a fixed stratified subset of it); AUROC (x 100) with c as the
positive class.  Draws depend only on (seed, class, draw), so every method sees identical samples.
Each finished (class, draw) cell can be stored as it finishes, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from corel._io import atomic_write_json, content_digest, create_exclusive
from corel.detection.base import BaseDetector


def draw_indices(y_train: np.ndarray, cls: int, n: int, draw: int, seed: int = 0) -> np.ndarray:
    """n distinct training indices of class ``cls`` for draw ``draw``; the same for every method."""
    members = np.flatnonzero(y_train == cls)
    if len(members) < n:
        raise ValueError(f"class {cls} has {len(members)} training samples, fewer than n = {n}")
    rng = np.random.default_rng([seed, cls, draw])
    return np.sort(rng.choice(members, size=n, replace=False))


def check_sample_counts(y_train: np.ndarray, ns: Sequence[int], classes: Sequence[int] | None = None) -> None:
    """ValueError unless every class (of ``classes``, default all) has at least max(``ns``) training
    samples: checked before any work (a long training or evaluation would otherwise end in it)."""
    labels, counts = np.unique(y_train, return_counts=True)
    have = dict(zip(labels.tolist(), counts.tolist()))
    short = {int(c): have.get(int(c), 0) for c in (labels if classes is None else classes)
             if have.get(int(c), 0) < max(ns)}
    if short:
        c, k = min(short.items(), key=lambda item: item[1])
        raise ValueError(f"class {c} has {k} training samples, fewer than n = {max(ns)}"
                         + (f" ({len(short) - 1} other classes too)" if len(short) > 1 else ""))


def cell_seed(seed: int, cls: int, draw: int) -> int:
    """The seed a detector gets for (class, draw): network initialisations differ between draws."""
    return int(np.random.SeedSequence([seed, cls, draw]).generate_state(1)[0])


def stratified_subset(y_test: np.ndarray, size: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of a stratified random subset of ``size`` test samples (each class keeps its
    share); all indices when ``size`` is None or not smaller than the test split."""
    if size is None or size >= len(y_test):
        return np.arange(len(y_test))
    labels, counts = np.unique(y_test, return_counts=True)
    if size < len(labels):
        raise ValueError(f"test_size {size} is smaller than the number of classes ({len(labels)})")
    rng = np.random.default_rng([seed, len(y_test), size])
    take = np.maximum(1, np.round(counts * size / len(y_test)).astype(int))
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(y_test == c), k, replace=False)
                                   for c, k in zip(labels, take)]))


@dataclass(frozen=True)
class PaperProtocol:
    """A backbone trained on ``train_data``, evaluated one-class on every class of ``eval_data``."""

    train_data: str
    eval_data: str
    description: str
    published_mean: float | None = None  # the authors' mean AUROC x 100 at n = 120, where reported


PROTOCOLS: dict[str, PaperProtocol] = {
    "cifar10": PaperProtocol("cifar10", "cifar10", "CIFAR-10 backbone, CIFAR-10 classes"),
    "cifar10-from-cifar100": PaperProtocol("cifar100", "cifar10", "CIFAR-100 backbone, CIFAR-10 classes (the paper's main table)", 75.96),
    "cifar20": PaperProtocol("cifar10", "cifar20", "CIFAR-10 backbone, the 20 CIFAR-100 superclasses"),
    "cifar100": PaperProtocol("cifar10", "cifar100", "CIFAR-10 backbone, the 100 CIFAR-100 classes"),
    "imagenet": PaperProtocol("imagefolder", "imagefolder", "ImageNet backbone (32x32), 1000 one-class models"),
}


class CellStore:
    """Finished (class, draw) AUROC cells as small JSON files in ``directory``, written atomically.

    ``key`` (method, data, n, seed, settings ...) is kept in key.json: cells computed under another key
    are never mixed in; opening such a directory raises."""

    def __init__(self, directory: str | Path, key: dict, *, create: bool = True):
        """``create=False``: only read (a directory without a key holds no cells, and gets no key)."""
        self.directory = Path(directory)
        key_file = self.directory / "key.json"
        key = json.loads(json.dumps(key))  # as it reads back (tuples become lists)
        # created only if absent: of processes starting at once with different keys, one wins, the others fail
        if (create or key_file.exists()) and not create_exclusive(key_file, json.dumps(key, indent=2) + "\n"):
            stored = json.loads(key_file.read_text())
            if stored != key:
                raise ValueError(_refusal(self.directory, stored, key))

    def _path(self, cls: int, draw: int) -> Path:
        return self.directory / f"class{cls}_draw{draw}.json"

    def get(self, cls: int, draw: int) -> dict | None:
        path = self._path(cls, draw)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"result file {path} is corrupt ({e}); delete it to recompute the cell") from e

    def put(self, cls: int, draw: int, auroc: float, seconds: float) -> None:
        atomic_write_json(self._path(cls, draw), {"class": cls, "draw": draw, "auroc": auroc, "seconds": seconds})


def _refusal(directory: Path, stored: dict, key: dict) -> str:
    """Why the cells in ``directory`` (key ``stored``) are not taken for ``key``, and what to do."""
    unrecorded = {k: v for k, v in key.items() if k not in stored}
    if stored == {k: v for k, v in key.items() if k in stored}:
        # an older corel's key lacks what this one records (data_digest, test_subset): nothing differs that is
        # known, but nothing can be checked either; hours of cells are kept by saying they match
        return (f"{directory} was written by an older corel (before 0.3), which did not record {', '.join(unrecorded)}: its cells "
                "cannot be checked against this run. If they were computed on this same data (and test subset), "
                f"keep them by adding {json.dumps(unrecorded)[1:-1]} to its key.json; else delete it or use another "
                "output folder")
    changed = [_difference(k, stored.get(k, "(missing)"), key.get(k, "(missing)"))
               for k in sorted(set(stored) | set(key)) if stored.get(k) != key.get(k)]
    return (f"{directory} holds results computed with other settings ({'; '.join(changed)}); "
            "use another output folder or delete it")


def _difference(name: str, stored: object, wanted: object) -> str:
    """'name: stored -> wanted', or the name alone where the values are long (a backbone's whole record)."""
    values = f"{stored!r} -> {wanted!r}"
    return f"{name}: {values}" if len(values) <= 80 else name


@dataclass
class ProtocolResult:
    """AUROC x 100 of one method on one dataset, shape (classes, draws); NaN marks a cell not computed."""

    method: str
    dataset: str
    n: int
    seed: int
    class_names: list[str]
    auroc: np.ndarray
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)

    @property
    def finished(self) -> np.ndarray:
        """(classes,) True where every draw of the class was computed."""
        return np.isfinite(self.auroc).all(axis=1)

    @property
    def per_class(self) -> np.ndarray:
        """(classes,) mean AUROC over draws; NaN for an unfinished class."""
        return self.auroc.mean(axis=1)

    @property
    def mean(self) -> float:
        """Mean over the finished classes of the per-class means (NaN if none)."""
        return float(self.per_class[self.finished].mean()) if self.finished.any() else float("nan")

    @property
    def std_over_draws(self) -> float:
        """Standard deviation over draws of the class-mean AUROC over finished classes (0 for one draw)."""
        return self.spread_over_draws(self.finished)

    def spread_over_draws(self, among: np.ndarray) -> float:
        """:attr:`std_over_draws` over the classes where ``among`` (classes,) is True, all finished."""
        if self.auroc.shape[1] < 2 or not among.any():  # (numpy would warn about the empty mean)
            return 0.0
        return float(self.auroc[among].mean(axis=0).std(ddof=1))

    def to_dict(self) -> dict:
        return {
            "method": self.method, "dataset": self.dataset, "n": self.n, "seed": self.seed,
            "draws": int(self.auroc.shape[1]), "mean": _finite_or_none(self.mean), "std_over_draws": self.std_over_draws,
            "seconds": self.seconds, "settings": self.settings,
            "finished_classes": int(self.finished.sum()),
            "classes": [{"class": c, "auroc_mean": _finite_or_none(m), "auroc_draws": [_finite_or_none(a) for a in row]}
                        for c, m, row in zip(self.class_names, self.per_class, self.auroc)],
        }


def evaluate(
    make_detector: Callable[[int], BaseDetector],
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    class_names: list[str] | None = None,
    n: int = 120,
    draws: int = 5,
    seed: int = 0,
    classes: list[int] | None = None,
    test_size: int | None = None,
    method: str = "corel",
    dataset: str = "",
    data_digest: str | None = None,
    settings: dict | None = None,
    cells_dir: str | Path | None = None,
    compute: bool = True,
    progress: bool = True,
) -> ProtocolResult:
    """Runs the protocol; x_* are whatever the detectors take (images, or codes for corel).

    ``make_detector(seed)`` builds an unfitted detector; the seed is :func:`cell_seed` of the cell.
    ``test_size``: score a stratified subset of that many test samples (:func:`stratified_subset`), the same
    for every method; None = the whole test split.  ``data_digest``: identifies the data (e.g.
    ``ImageData.digest``), recorded and part of the stored cells' key.  ``settings``: the detector's settings,
    recorded.
    ``cells_dir``: store each finished cell there (:class:`CellStore`) and reuse stored ones.
    ``compute=False``: only collect stored cells; the others stay NaN."""
    from sklearn.metrics import roc_auc_score  # here: the command line should not wait for scikit-learn
    if n < 1 or draws < 1:
        raise ValueError(f"n and draws must be >= 1, got n={n}, draws={draws}")
    labels = np.unique(y_train) if classes is None else np.asarray(classes)
    if len(set(labels.tolist())) < len(labels):  # a class twice would weigh twice in the mean
        raise ValueError(f"classes must be distinct, got {labels.tolist()}")
    unknown = sorted(set(labels.tolist()) - set(np.unique(y_train).tolist()))
    if unknown:
        raise ValueError(f"classes {unknown} have no training samples (the training split's classes: "
                         f"{', '.join(map(str, np.unique(y_train)))})")
    check_sample_counts(y_train, [n], labels)
    names = [str(c) for c in labels] if class_names is None else [class_names[c] for c in labels]
    subset = stratified_subset(y_test, test_size, seed)
    x_test, y_test = x_test[subset], y_test[subset]
    settings = {"draws": draws, "classes": [int(c) for c in labels], "test_size": len(subset),
                # which test samples: --test-size 50 and 51 both take 50 samples, but other ones
                "test_subset": content_digest(subset)[:16], "data_digest": data_digest, **(settings or {})}
    store = None if cells_dir is None else CellStore(cells_dir, {
        "method": method, "dataset": dataset, "n": n, "seed": seed,
        **{k: v for k, v in settings.items() if k not in ("draws", "classes")}}, create=compute)
    auroc = np.full((len(labels), draws), np.nan)
    seconds = 0.0
    cells = [(i, int(c), r) for i, c in enumerate(labels) for r in range(draws)]
    todo = []
    for i, c, r in cells:
        stored = store.get(c, r) if store is not None else None
        if stored is not None:
            auroc[i, r], seconds = stored["auroc"], seconds + stored["seconds"]
        elif compute:
            todo.append((i, c, r))
    bar = _progress(len(todo), f"{method} on {dataset or 'data'}", progress)
    for i, c, r in todo:
        positives = y_test == c
        if positives.all() or not positives.any():
            raise ValueError(f"class {c} must be neither absent from nor all of the test split")
        start = time.perf_counter()
        det = make_detector(cell_seed(seed, c, r)).fit(x_train[draw_indices(y_train, c, n, r, seed)])
        auroc[i, r] = 100 * roc_auc_score(positives, det.score_samples(x_test))
        elapsed = time.perf_counter() - start
        seconds += elapsed
        if store is not None:
            store.put(c, r, float(auroc[i, r]), elapsed)
        bar.update(1)
        bar.set_postfix(auroc=f"{np.nanmean(auroc):.2f}")
    bar.close()
    return ProtocolResult(method, dataset, n, seed, names, auroc, seconds, settings)


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None  # JSON has no NaN


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)
