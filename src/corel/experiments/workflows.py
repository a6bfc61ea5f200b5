"""End-to-end workflows behind the CLI: train a backbone, evaluate it, reproduce a paper protocol,
compare with the baselines, analyse densification, demo."""

from __future__ import annotations

import json
import logging
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only

from corel.detection.backbone import Backbone
from corel.detection.detector import OneClassDetector
from corel.detection.models import AutoencoderConfig
from corel.experiments import reports
from corel.experiments.datasets import ImageData, load_dataset
from corel.experiments.protocol import PROTOCOLS, ProtocolResult, check_sample_counts, evaluate
from corel.experiments.training import TrainConfig, train
from corel.topology.distances import Metric
from corel.topology.theory import Codes, Densification, as_codes, check_analysis, check_sizes, densification_sizes, densify




def default_model_config(data: ImageData, branches: int = 16, branch_dim: int = 10,
                         filters: tuple[int, ...] | None = None, arch: str | None = None,
                         init: str = "layer") -> AutoencoderConfig:
    """The paper's conv network for 32x32 RGB images; an MLP with the same branch layout otherwise."""
    shape = tuple(int(s) for s in data.x_train.shape[1:])
    if arch is None:
        arch = "conv" if shape[1] % 8 == 0 and shape[2] % 8 == 0 and shape[1] >= 16 else "mlp"
    if filters is None:
        filters = (32, 64, 128) if arch == "conv" else (256, 128)
    return AutoencoderConfig(kind=arch, input_shape=shape, filters=tuple(filters), branches=branches,
                             branch_dim=branch_dim, init=init)


def train_backbone(data: ImageData, out_dir: str | Path, model_config: AutoencoderConfig, config: TrainConfig,
                   **trainer_kwargs) -> Backbone:
    """Trains on ``data``'s training split; see :func:`corel.experiments.training.train` for the files written."""
    return train(data.x_train, out_dir, model_config, config,
                 info={"dataset": data.name, "train_images": int(len(data.x_train))}, **trainer_kwargs)


@dataclass(frozen=True)
class EncodedSplits:
    """Both splits of a dataset encoded by one backbone: (N, branches, branch_dim) each."""

    train: torch.Tensor
    test: torch.Tensor
    seconds: float


def encode_splits(backbone: Backbone, data: ImageData) -> EncodedSplits:
    """Encodes ``data``'s train and test images once, for any number of evaluations."""
    start = time.perf_counter()
    train_codes, test_codes = backbone.encode(data.x_train), backbone.encode(data.x_test)
    return EncodedSplits(train_codes, test_codes, time.perf_counter() - start)


def evaluate_backbone(backbone: Backbone, data: ImageData, out_dir: str | Path | None = None, *,
                      ns: tuple[int, ...] = (120,), draws: int = 5, seed: int = 0, radius: float | None = None,
                      classes: list[int] | None = None, test_size: int | None = None, cells: bool = False,
                      compute: bool = True, progress: bool = True, method: str = "corel",
                      codes: EncodedSplits | None = None) -> dict[int, ProtocolResult]:
    """The one-class protocol for ``backbone`` on ``data``, for each n in ``ns``.  Both splits are
    encoded once (or ``codes`` from :func:`encode_splits` are used); each class and draw then fits a
    :class:`OneClassDetector` on codes.  Writes the reports (auroc_<data>_n<n>.*,
    settings_<data>_n<n>.json) when ``out_dir`` is given; ``cells``: also keep each finished cell
    there, to resume (see :func:`corel.experiments.protocol.evaluate`)."""
    codes = encode_splits(backbone, data) if codes is None else codes
    radius = backbone.eta if radius is None else radius

    def make(_seed: int) -> OneClassDetector:  # counting is deterministic: the cell seed is not needed
        return OneClassDetector(None, radius=radius, metric=backbone.metric, branches=backbone.config.branches)

    settings = {"radius": radius, "metric": backbone.metric, "backbone": backbone.info,
                "backbone_fingerprint": backbone.fingerprint}
    results = {}
    for n in ns:
        cells_dir = Path(out_dir) / f"cells_{data.name}_n{n}" if cells and out_dir is not None else None
        result = evaluate(make, codes.train, data.y_train, codes.test, data.y_test, class_names=list(data.class_names),
                          n=n, draws=draws, seed=seed, classes=classes, test_size=test_size, method=method,
                          dataset=data.name, data_digest=data.digest, settings=settings, cells_dir=cells_dir,
                          compute=compute, progress=progress)
        result.settings["encode_seconds"] = codes.seconds
        result.seconds += codes.seconds  # the fits only count codes: encoding is the cost
        if out_dir is not None:
            out = Path(out_dir)
            reports.write_protocol(result, out, stem=f"auroc_{data.name}_n{n}")
            reports.write_json(out / f"settings_{data.name}_n{n}.json",
                               {"n": n, "seed": seed, **result.settings, "protocol_seconds": result.seconds,
                                "torch": torch.__version__, "machine": platform.platform()})
        results[n] = result
    return results


def drop_cells_of_earlier_weights(where: Path, fingerprint: str) -> None:
    """Removes the stored cells (:func:`evaluate_backbone` with ``cells``) in ``where`` of another backbone
    than the one with ``fingerprint``: for ``corel reproduce`` and ``corel ablate``, whose run folder trained
    on since (a rerun with more --epochs), the weights they were computed with are gone, and the cells
    could only refuse every later evaluation of the run."""
    for key_file in where.glob("cells_*/key.json"):
        stale = json.loads(key_file.read_text()).get("backbone_fingerprint")
        if stale != fingerprint:
            logging.getLogger("corel").info("%s: cells of earlier weights of this backbone (%s) are replaced",
                                            key_file.parent, stale)
            shutil.rmtree(key_file.parent)


def class_reports(backbone: Backbone, data: ImageData, out_dir: str | Path, *, n: int = 120, seed: int = 0,
                  radius: float | None = None, codes: EncodedSplits | None = None) -> list[Path]:
    """One HTML report per class (:func:`corel.experiments.reports.html`): the detector of the
    protocol's first draw of n samples, the whole test split scored, the class as normal, so the
    page shows the ROC curve and the AUROC.  Returns the pages' paths."""
    from corel.experiments.protocol import draw_indices

    codes = encode_splits(backbone, data) if codes is None else codes
    pages = []
    for c, name in enumerate(data.class_names):
        chosen = draw_indices(data.y_train, c, n, 0, seed)
        det = OneClassDetector(None, radius=radius or backbone.eta, metric=backbone.metric,
                               branches=backbone.config.branches).fit(codes.train[chosen])
        pages.append(reports.html(Path(out_dir) / f"report_{data.name}_{c}.html", det.score_samples(codes.test),
                                  det.offset_, names=[f"test image {i} ({data.class_names[y]})"
                                                      for i, y in enumerate(data.y_test)],
                                  images=data.x_test, fitted=data.x_train[chosen], labels=data.y_test == c,
                                  title=f"corel on {data.name}: class {name} from {n} samples (draw 0)"))
    return pages


def reproduce(name: str, out_dir: str | Path, data_dir: str | Path | None = None, *, eval_data_dir: str | Path | None = None,
              ns: tuple[int, ...] = (120,), draws: int = 5, seed: int = 0, model_config: AutoencoderConfig | None = None,
              architecture: dict[str, Any] | None = None, config: TrainConfig = TrainConfig(), download: bool = True,
              progress: bool = True, **trainer_kwargs) -> dict[int, ProtocolResult]:
    """Runs a named :data:`PROTOCOLS` entry end to end: trains the backbone into out_dir/backbone (a
    killed training resumes, a finished one is reused, one with other settings is refused), then
    evaluates for each n in ``ns``, keeping each finished cell (a killed evaluation resumes).  With
    several devices, the processes Lightning starts for the others return {} after the training.
    ``model_config`` defaults to :func:`default_model_config` of the training data with the keyword
    arguments ``architecture`` (branches, branch_dim, filters, arch, init)."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    proto = PROTOCOLS[name]
    out = Path(out_dir)
    train_data = load_dataset(proto.train_data, data_dir, download=download)
    eval_data = train_data if proto.eval_data == proto.train_data and eval_data_dir is None else \
        load_dataset(proto.eval_data, eval_data_dir or data_dir, download=download)
    check_sample_counts(eval_data.y_train, ns)  # before hours of training
    mc = model_config or default_model_config(train_data, **(architecture or {}))
    backbone = train_backbone(train_data, out / "backbone", mc, config, resume=True, progress=progress,
                              **trainer_kwargs)
    if rank_zero_only.rank != 0:  # a process Lightning started for another device: its training is done
        return {}
    drop_cells_of_earlier_weights(out, backbone.fingerprint)  # (--epochs grew: the backbone trained on)
    results = evaluate_backbone(backbone, eval_data, out, ns=ns, draws=draws, seed=seed, cells=True, progress=progress)
    rows = [[n, f"{r.mean:.2f}", f"{r.std_over_draws:.2f}",
             f"{proto.published_mean:.2f}" if proto.published_mean is not None and n == 120 else "-"]
            for n, r in results.items()]
    reports.write_text(out / "summary.md", f"# {name}: {proto.description}\n\n"
                       + reports.markdown_table(["n", "mean AUROC", "std over draws", "published"], rows))
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
        run = out / label.replace("=", "")  # resumed or reused; another seed or --quick there is refused
        # one device: on a machine with several GPUs "auto" would start a process per GPU for digits
        backbone = train_backbone(data, run, model_config, config, resume=True, progress=progress, devices=1)
        results[label] = evaluate_backbone(backbone, data, run, ns=(n,), draws=draws, seed=seed, progress=progress,
                                           method=label)[n]
    reports.plot_auroc_bars(results, out / "auroc_digits.png", title=f"one-class AUROC on digits, n={n}")
    return results


def compare(methods: list[str], data: ImageData, out_dir: str | Path, *, backbone: Backbone | None = None,
            n: int = 120, draws: int = 5, seed: int = 0, small: bool = False, classes: list[int] | None = None,
            test_size: int | None = None, device: str = "cpu", compute: bool = True,
            progress: bool = True) -> dict[str, ProtocolResult]:
    """Runs corel and baselines on identical draws (same seed: same samples per class and draw, same
    test subset) and writes compare_<data>_n<n>.csv/.md and a grouped bar chart .png (the paper's figure).

    Every finished (method, class, draw) is stored under out_dir/<method>/cells_<data>_n<n>/ at once:
    a killed run resumes, and several processes may share the work (e.g. one per method or class).
    ``compute=False`` computes nothing and reports the stored cells; the means then cover only the
    classes every method finished.  ``small``: the baselines' CPU-sized settings
    (``corel.detection.baselines.SMALL_SETTINGS``); ``device``: where the baselines run."""
    from corel.detection.baselines import BASELINES, SMALL_SETTINGS

    unknown = [m for m in methods if m != "corel" and m not in BASELINES]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from corel, {', '.join(BASELINES)}")
    if "corel" in methods and backbone is None:
        raise ValueError("method corel needs a backbone (train one with `corel train`)")
    out = Path(out_dir)
    stem = f"auroc_{data.name}_n{n}"
    results: dict[str, ProtocolResult] = {}
    for m in methods:
        if m == "corel":
            results[m] = evaluate_backbone(backbone, data, out / m, ns=(n,), draws=draws, seed=seed, classes=classes,
                                           test_size=test_size, cells=True, compute=compute, progress=progress)[n]
            continue
        settings = {**(SMALL_SETTINGS[m] if small else {}), "device": device}
        results[m] = evaluate(lambda s: BASELINES[m](seed=s, **settings), data.x_train, data.y_train, data.x_test,
                              data.y_test, class_names=list(data.class_names), n=n, draws=draws, seed=seed,
                              classes=classes, test_size=test_size, method=m, dataset=data.name,
                              data_digest=data.digest, settings=settings,
                              cells_dir=out / m / f"cells_{data.name}_n{n}", compute=compute, progress=progress)
        reports.write_protocol(results[m], out / m, stem=stem)
    reports.write_comparison(results, out / f"compare_{data.name}_n{n}", title=f"one-class AUROC on {data.name}, n={n}, "
                     f"{draws} draw{'s' if draws > 1 else ''}")
    return results


def analyze_backbone_densification(backbone: Backbone, data: ImageData, out_dir: str | Path, *,
                                   batch_size: int = 100, num_samples: int | None = None, seed: int = 0):
    """Death times of N encoded training samples for N = b, 2b, 5b, ..., per branch
    (:func:`analyze_densification` on the backbone's codes)."""
    total = len(data.x_train) if num_samples is None else min(num_samples, len(data.x_train))

    def encode(indices: np.ndarray) -> torch.Tensor:
        return backbone.encode(data.x_train[indices]).flatten(1)

    return analyze_densification(encode, out_dir, eta=backbone.eta, batch_size=batch_size, num_samples=total,
                                 metric=backbone.metric, branches=backbone.config.branches, seed=seed)


def analyze_densification(source: Codes | Callable[[np.ndarray], Codes], out_dir: str | Path, *, eta: float,
                          batch_size: int | None = None, sizes: Sequence[int] | None = None,
                          num_samples: int | None = None, metric: Metric = "l1", branches: int = 1,
                          seed: int = 0) -> Densification:
    """:func:`corel.topology.theory.densification`, written to ``out_dir`` as densification.csv, .json and .png.

    ``source`` is either the codes (N, D) of all samples or a function ``encode(indices)`` that
    returns the codes (len(indices), D) of the dataset samples at ``indices`` (then
    ``num_samples`` is the dataset size and only the largest subset is encoded).  ``sizes``
    defaults to :func:`densification_sizes` of ``batch_size`` (b, 2b, 5b, ..., all).  Same seed,
    same subsets, whichever form ``source`` takes.
    """
    if callable(source):
        if num_samples is None:
            raise ValueError("num_samples (the dataset size) is needed when source is an encode function")
        total = num_samples
    else:
        source = as_codes(source)
        total = source.shape[0]
    if sizes is None:
        if batch_size is None:
            raise ValueError("give sizes or batch_size")
        sizes = densification_sizes(batch_size, total)
    sizes = check_sizes(sizes, total)
    check_analysis(eta, metric, branches)
    order = np.random.default_rng(seed).permutation(total)[: sizes[-1]]
    ordered = as_codes(source(order)) if callable(source) else source[torch.from_numpy(order)]
    if ordered.shape[0] != len(order):
        raise ValueError(f"encode returned {ordered.shape[0]} codes for {len(order)} indices")
    check_analysis(eta, metric, branches, ordered.shape[1])
    result = densify(ordered, sizes, eta, metric, branches, seed)

    reports.write_densification(result, out_dir, {"eta": eta, "metric": metric, "branches": branches, "seed": seed,
                                                   "num_samples": total, "code_dim": int(ordered.shape[1])})
    return result
