"""The paper's evaluation protocol: one-class AUROC per class from n samples, over random draws.

For every class c of a dataset and each draw, a detector is fitted on n random training images of c
and scores the whole test split; AUROC (x 100) with c as the positive class.  Draws depend only on
(seed, class, draw), so every method sees identical samples.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
from sklearn.metrics import roc_auc_score


class Detector(Protocol):
    def fit(self, X: Any) -> "Detector": ...

    def score_samples(self, X: Any) -> np.ndarray: ...


def draw_indices(y_train: np.ndarray, cls: int, n: int, draw: int, seed: int = 0) -> np.ndarray:
    """n distinct training indices of class ``cls`` for draw ``draw``; the same for every method."""
    members = np.flatnonzero(y_train == cls)
    if len(members) < n:
        raise ValueError(f"class {cls} has {len(members)} training samples, fewer than n = {n}")
    rng = np.random.default_rng([seed, cls, draw])
    return np.sort(rng.choice(members, size=n, replace=False))


@dataclass
class ProtocolResult:
    """AUROC x 100 of one method on one dataset, shape (classes, draws)."""

    method: str
    dataset: str
    n: int
    seed: int
    class_names: list[str]
    auroc: np.ndarray
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)

    @property
    def per_class(self) -> np.ndarray:
        """(classes,) mean AUROC over draws."""
        return self.auroc.mean(axis=1)

    @property
    def mean(self) -> float:
        """Mean over classes of the per-class means."""
        return float(self.per_class.mean())

    @property
    def std_over_draws(self) -> float:
        """Standard deviation over draws of the class-mean AUROC (0 for one draw)."""
        per_draw = self.auroc.mean(axis=0)
        return float(per_draw.std(ddof=1)) if len(per_draw) > 1 else 0.0

    def to_dict(self) -> dict:
        return {
            "method": self.method, "dataset": self.dataset, "n": self.n, "seed": self.seed,
            "draws": int(self.auroc.shape[1]), "mean": self.mean, "std_over_draws": self.std_over_draws,
            "seconds": self.seconds, "settings": self.settings,
            "classes": [{"class": c, "auroc_mean": float(m), "auroc_draws": [float(a) for a in row]}
                        for c, m, row in zip(self.class_names, self.per_class, self.auroc)],
        }

    def markdown(self) -> str:
        lines = [f"| class | AUROC ({self.method}, n={self.n}, {self.auroc.shape[1]} draws) |", "|---|---|"]
        lines += [f"| {c} | {m:.2f} ± {row.std(ddof=1) if len(row) > 1 else 0:.2f} |"
                  for c, m, row in zip(self.class_names, self.per_class, self.auroc)]
        lines.append(f"| **mean** | **{self.mean:.2f}** ± {self.std_over_draws:.2f} |")
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | Path, stem: str = "auroc") -> list[Path]:
        """Writes <stem>.csv, .json, .md and a bar chart .png into out_dir; returns the paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / f"{stem}.{ext}" for ext in ("csv", "json", "md", "png")]
        with open(paths[0], "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["class", "auroc_mean", *[f"draw_{i}" for i in range(self.auroc.shape[1])]])
            for c, m, row in zip(self.class_names, self.per_class, self.auroc):
                w.writerow([c, f"{m:.4f}", *[f"{a:.4f}" for a in row]])
            w.writerow(["mean", f"{self.mean:.4f}"])
        paths[1].write_text(json.dumps(self.to_dict(), indent=2))
        paths[2].write_text(self.markdown())
        plot_auroc_bars({self.method: self}, paths[3], title=f"{self.method} on {self.dataset}, n={self.n}")
        return paths


def evaluate(
    make_detector: Callable[[], Detector],
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
    method: str = "corel",
    dataset: str = "",
    progress: bool = True,
) -> ProtocolResult:
    """Runs the protocol; x_* are whatever the detectors take (images, or codes for corel)."""
    if n < 1 or draws < 1:
        raise ValueError(f"n and draws must be >= 1, got n={n}, draws={draws}")
    labels = np.unique(y_train) if classes is None else np.asarray(classes)
    names = [str(c) for c in labels] if class_names is None else [class_names[c] for c in labels]
    auroc = np.zeros((len(labels), draws))
    start = time.perf_counter()
    bar = _progress(len(labels) * draws, f"{method} on {dataset or 'data'}", progress)
    for i, c in enumerate(labels):
        positives = y_test == c
        if positives.all() or not positives.any():
            raise ValueError(f"class {c} must be neither absent from nor all of the test split")
        for r in range(draws):
            det = make_detector().fit(x_train[draw_indices(y_train, int(c), n, r, seed)])
            auroc[i, r] = 100 * roc_auc_score(positives, det.score_samples(x_test))
            bar.update(1)
            bar.set_postfix(auroc=f"{auroc[: i + 1].sum() / (i * draws + r + 1):.2f}")
    bar.close()
    return ProtocolResult(method, dataset, n, seed, names, auroc, time.perf_counter() - start,
                          {"draws": draws, "classes": [int(c) for c in labels]})


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def plot_auroc_bars(results: dict[str, ProtocolResult], path: str | Path, title: str = "") -> None:
    """Grouped bar chart: per-class AUROC of each method, plus each method's mean (the paper's style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(results)
    names = results[methods[0]].class_names + ["mean"]
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names) * max(1, len(methods) / 2)), 4))
    x = np.arange(len(names))
    for j, m in enumerate(methods):
        values = [*results[m].per_class, results[m].mean]
        ax.bar(x + (j - (len(methods) - 1) / 2) * width, values, width, label=f"{m} ({results[m].mean:.1f})")
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, names, rotation=45 if len(names) > 12 else 0, ha="right" if len(names) > 12 else "center")
    ax.set_ylabel("AUROC x 100")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
