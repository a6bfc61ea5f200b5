"""End-to-end workflows behind the CLI: train a backbone, evaluate it, reproduce a paper protocol, demo."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from corel.backbone import Backbone
from corel.datasets import ImageData, load_dataset
from corel.detector import OneClassDetector
from corel.models import AutoencoderConfig
from corel.protocol import ProtocolResult, evaluate, plot_auroc_bars
from corel.training import TrainConfig, train


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


def default_model_config(data: ImageData, branches: int = 16, branch_dim: int = 10,
                         filters: tuple[int, ...] | None = None, arch: str | None = None) -> AutoencoderConfig:
    """The paper's conv network for 32x32 RGB images; an MLP with the same branch layout otherwise."""
    shape = tuple(int(s) for s in data.x_train.shape[1:])
    if arch is None:
        arch = "conv" if shape[1] % 8 == 0 and shape[2] % 8 == 0 and shape[1] >= 16 else "mlp"
    if filters is None:
        filters = (32, 64, 128) if arch == "conv" else (256, 128)
    return AutoencoderConfig(kind=arch, input_shape=shape, filters=tuple(filters), branches=branches, branch_dim=branch_dim)


def train_backbone(data: ImageData, out_dir: str | Path, model_config: AutoencoderConfig, config: TrainConfig,
                   **trainer_kwargs) -> Backbone:
    """Trains on ``data``'s training split; see :func:`corel.training.train` for the files written."""
    return train(data.x_train, out_dir, model_config, config,
                 info={"dataset": data.name, "train_images": int(len(data.x_train))}, **trainer_kwargs)


def evaluate_backbone(backbone: Backbone, data: ImageData, out_dir: str | Path | None = None, *,
                      ns: tuple[int, ...] = (120,), draws: int = 5, seed: int = 0, radius: float | None = None,
                      classes: list[int] | None = None, progress: bool = True,
                      method: str = "corel") -> dict[int, ProtocolResult]:
    """The one-class protocol for ``backbone`` on ``data``, for each n in ``ns``.  Both splits are
    encoded once; each class and draw then fits a :class:`OneClassDetector` on codes.  Writes the
    reports (auroc_<data>_n<n>.*, settings_<data>_n<n>.json) when ``out_dir`` is given."""
    start = time.perf_counter()
    codes_train = backbone.encode(data.x_train)
    codes_test = backbone.encode(data.x_test)
    encode_seconds = time.perf_counter() - start
    radius = backbone.eta if radius is None else radius

    def make() -> OneClassDetector:
        return OneClassDetector(None, radius=radius, metric=backbone.metric, branches=backbone.config.branches)

    results = {}
    for n in ns:
        result = evaluate(make, codes_train, data.y_train, codes_test, data.y_test, class_names=list(data.class_names),
                          n=n, draws=draws, seed=seed, classes=classes, method=method, dataset=data.name,
                          progress=progress)
        result.settings.update({"radius": radius, "metric": backbone.metric, "encode_seconds": encode_seconds,
                                "backbone": backbone.info})
        if out_dir is not None:
            out = Path(out_dir)
            result.write(out, stem=f"auroc_{data.name}_n{n}")
            (out / f"settings_{data.name}_n{n}.json").write_text(json.dumps(
                {"n": n, "draws": draws, "seed": seed, "radius": radius, "metric": backbone.metric,
                 "classes": result.settings["classes"], "backbone_info": backbone.info,
                 "encode_seconds": encode_seconds, "protocol_seconds": result.seconds,
                 "torch": torch.__version__, "machine": platform.platform()}, indent=2))
        results[n] = result
    return results


def reproduce(name: str, out_dir: str | Path, data_dir: str | Path | None = None, *, eval_data_dir: str | Path | None = None,
              ns: tuple[int, ...] = (120,), draws: int = 5, seed: int = 0, model_config: AutoencoderConfig | None = None,
              config: TrainConfig = TrainConfig(), download: bool = True, progress: bool = True,
              **trainer_kwargs) -> dict[int, ProtocolResult]:
    """Runs a named :data:`PROTOCOLS` entry end to end: trains the backbone into out_dir/backbone
    unless its file exists (a killed training resumes), then evaluates for each n in ``ns``."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    proto = PROTOCOLS[name]
    out = Path(out_dir)
    backbone_file = out / "backbone" / "backbone.pt"
    train_data = load_dataset(proto.train_data, data_dir, download=download)
    if backbone_file.exists():
        backbone = Backbone.load(backbone_file)
    else:
        mc = model_config or default_model_config(train_data)
        backbone = train_backbone(train_data, out / "backbone", mc, config, resume=True, progress=progress,
                                  **trainer_kwargs)
    eval_data = train_data if proto.eval_data == proto.train_data and eval_data_dir is None else \
        load_dataset(proto.eval_data, eval_data_dir or data_dir, download=download)
    results = evaluate_backbone(backbone, eval_data, out, ns=ns, draws=draws, seed=seed, progress=progress)
    lines = [f"# {name}: {proto.description}", "", "| n | mean AUROC | std over draws | published |", "|---|---|---|---|"]
    for n, r in results.items():
        published = f"{proto.published_mean:.2f}" if proto.published_mean is not None and n == 120 else "-"
        lines.append(f"| {n} | {r.mean:.2f} | {r.std_over_draws:.2f} | {published} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return results


def demo(out_dir: str | Path = "runs/demo", *, quick: bool = False, seed: int = 0, progress: bool = False) -> dict[str, ProtocolResult]:
    """The README's main job, on sklearn's bundled digits (no download): trains a small branched
    autoencoder with and without the connectivity loss and evaluates one-class detection per digit."""
    data = load_dataset("digits")
    out = Path(out_dir)
    model_config = AutoencoderConfig(kind="mlp", input_shape=tuple(data.x_train.shape[1:]), filters=(256, 128),
                                     branches=8, branch_dim=4)
    epochs, n, draws = (5, 40, 1) if quick else (60, 80, 5)
    results = {}
    for label, lam in (("lambda=1", 1.0), ("lambda=0", 0.0)):
        config = TrainConfig(epochs=epochs, batch_size=50, lr=1e-3, eta=1.0, lam=lam, seed=seed)
        run = out / label.replace("=", "")
        backbone = Backbone.load(run / "backbone.pt") if (run / "backbone.pt").exists() else \
            train_backbone(data, run, model_config, config, resume=True, progress=progress)
        results[label] = evaluate_backbone(backbone, data, run, ns=(n,), draws=draws, seed=seed, progress=progress,
                                           method=label)[n]
    plot_auroc_bars(results, out / "auroc_digits.png", title=f"one-class AUROC on digits, n={n}")
    return results


def compare(methods: list[str], data: ImageData, out_dir: str | Path, *, backbone: Backbone | None = None,
            n: int = 120, draws: int = 5, seed: int = 0, small: bool = False, classes: list[int] | None = None,
            progress: bool = True) -> dict[str, ProtocolResult]:
    """Runs corel and baselines on identical draws (same seed: same samples per class and draw) and
    writes compare_<data>_n<n>.csv/.md and a grouped bar chart .png (the paper's figure style).
    ``small``: the baselines' CPU-sized settings (``corel.baselines.SMALL_SETTINGS``)."""
    from corel.baselines import BASELINES, SMALL_SETTINGS

    unknown = [m for m in methods if m != "corel" and m not in BASELINES]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from corel, {', '.join(BASELINES)}")
    if "corel" in methods and backbone is None:
        raise ValueError("method corel needs a backbone (train one with `corel train`)")
    out = Path(out_dir)
    results: dict[str, ProtocolResult] = {}
    for m in methods:
        if m == "corel":
            results[m] = evaluate_backbone(backbone, data, out / m, ns=(n,), draws=draws, seed=seed, classes=classes,
                                           progress=progress)[n]
            continue
        settings = SMALL_SETTINGS[m] if small else {}
        results[m] = evaluate(lambda: BASELINES[m](seed=seed, **settings), data.x_train, data.y_train, data.x_test,
                              data.y_test, class_names=list(data.class_names), n=n, draws=draws, seed=seed,
                              classes=classes, method=m, dataset=data.name, progress=progress)
        results[m].settings.update(settings)
        results[m].write(out / m, stem=f"auroc_{data.name}_n{n}")
    stem = out / f"compare_{data.name}_n{n}"
    names = results[methods[0]].class_names
    header = "| method | mean AUROC | std over draws | seconds | " + " | ".join(names) + " |"
    rows = [header, "|" + "---|" * (4 + len(names))]
    for m, r in results.items():
        rows.append(f"| {m} | {r.mean:.2f} | {r.std_over_draws:.2f} | {r.seconds:.0f} | "
                    + " | ".join(f"{v:.1f}" for v in r.per_class) + " |")
    stem.with_suffix(".md").write_text("\n".join(rows) + "\n")
    with open(stem.with_suffix(".csv"), "w") as f:
        f.write("method,mean,std_over_draws,seconds," + ",".join(names) + "\n")
        for m, r in results.items():
            f.write(f"{m},{r.mean:.4f},{r.std_over_draws:.4f},{r.seconds:.1f}," + ",".join(f"{v:.4f}" for v in r.per_class) + "\n")
    plot_auroc_bars(results, stem.with_suffix(".png"), title=f"one-class AUROC on {data.name}, n={n}, {draws} draws")
    return results


def analyze_backbone_densification(backbone: Backbone, data: ImageData, out_dir: str | Path, *,
                                   batch_size: int = 100, num_samples: int | None = None, seed: int = 0):
    """Death times of N encoded training samples for N = b, 2b, 5b, ..., per branch
    (:func:`corel.theory.analyze_densification` on the backbone's codes)."""
    from corel.theory import analyze_densification

    total = len(data.x_train) if num_samples is None else min(num_samples, len(data.x_train))

    def encode(indices: np.ndarray) -> torch.Tensor:
        return backbone.encode(data.x_train[indices]).flatten(1)

    return analyze_densification(encode, out_dir, eta=backbone.eta, batch_size=batch_size, num_samples=total,
                                 metric=backbone.metric, branches=backbone.config.branches, seed=seed)
