"""The paper's ablations as one resumable command: lambda x branch layout, ball radius, sample count.

Every backbone of the grid is its own run folder ``<out>/backbones/<data>_<B>x<D>_lam<lambda>``
(trained unless finished, resumed when killed, trained on when ``--epochs`` grew, refused when its
settings differ), and every evaluation its own folder ``<out>/evaluations/<run>/r<radius>`` with the
protocol's stored cells (those of a backbone's earlier weights are replaced).
A unit of work (one training, one evaluation) is claimed through a lock file first, so several
processes started on one ``--out`` (one per core) share the grid without doing anything twice.
The report (``ablation_<data>.csv/.md`` and the PNG charts) is written from whatever is finished
in ``<out>``, by every process when it is done: a partial grid gives a partial table.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from corel._io import claim
from corel.detection.backbone import Backbone
from corel.detection.models import AutoencoderConfig
from corel.experiments import reports
from corel.experiments.datasets import ImageData
from corel.experiments.protocol import check_sample_counts
from corel.experiments.training import TrainConfig
from corel.experiments.workflows import (drop_cells_of_earlier_weights, encode_splits, evaluate_backbone,
                                         train_backbone)

log = logging.getLogger("corel")

# the sample count of the lambda x layout table and of the radius sweep, when evaluated (the paper's)
REFERENCE_N = 120


def reference_n(ns: Sequence[int]) -> int:
    """The table's and the radius sweep's sample count: 120 when asked for, else the first of ``ns``."""
    return REFERENCE_N if REFERENCE_N in ns else ns[0]


@dataclass(frozen=True, order=True)
class Layout:
    """A latent layout: ``branches`` branches of ``branch_dim`` dimensions each."""

    branches: int
    branch_dim: int

    @classmethod
    def parse(cls, text: str) -> "Layout":
        match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", text)
        if match is None or int(match[1]) < 1 or int(match[2]) < 1:
            raise ValueError(f"a layout is <branches>x<dims>, e.g. 16x10, got {text!r}")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.branches}x{self.branch_dim}"


def run_name(data: str, layout: Layout, lam: float) -> str:
    return f"{data}_{layout}_lam{lam:g}"


def _evaluation_dir(out: Path, run: str, radius: float) -> Path:
    return out / "evaluations" / run / f"r{radius:g}"


def _one_device(trainer_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``trainer_kwargs`` with one device: "auto" (all GPUs) becomes 1, more is refused.  Lightning's
    DDP reruns the whole command in one process per device, and those processes, finding the
    grid's units claimed by the first, skipped them while the first waited for them for ever."""
    devices, nodes = trainer_kwargs.get("devices", "auto"), trainer_kwargs.get("num_nodes", 1)
    if devices == "auto":
        devices = 1
    if nodes != 1 or devices == -1 or (isinstance(devices, int) and devices > 1) \
            or (isinstance(devices, list) and len(devices) > 1):
        raise ValueError("corel ablate trains each backbone on one device; to use several, start one ablate per "
                         "device on the same --out (e.g. CUDA_VISIBLE_DEVICES=1 corel ablate ...): they share the grid")
    return {**trainer_kwargs, "devices": devices}


def ablate(data: ImageData, out_dir: str | Path, layouts: Sequence[Layout], lams: Sequence[float], *,
           model_config: AutoencoderConfig, config: TrainConfig, radii: Sequence[float] = (),
           ns: Sequence[int] = (REFERENCE_N,), draws: int = 5, seed: int = 0, progress: bool = True,
           **trainer_kwargs: Any) -> Path:
    """Trains every missing backbone of ``layouts`` x ``lams`` (``model_config`` and ``config`` give
    the other settings), evaluates each at every n of ``ns`` with radius = eta, and at the reference
    n (:func:`reference_n`) with every radius of ``radii``; then writes the report.  Returns the
    report's Markdown path.

    Units another process is working on are left to it; this call then reports what is finished.
    Each backbone trains on one device (``devices="auto"`` means one here): several processes, one
    per device, share the grid instead.
    """
    check_sample_counts(data.y_train, ns)  # before hours of training
    trainer_kwargs = _one_device(trainer_kwargs)
    out = Path(out_dir)
    cells = [(layout, lam) for layout in layouts for lam in lams]
    for layout, lam in cells:
        name = run_name(data.name, layout, lam)
        with claim(out / "locks" / f"{name}.train.lock") as mine:
            if not mine:
                log.info("%s: another process is training it", name)
                continue
            mc = replace(model_config, branches=layout.branches, branch_dim=layout.branch_dim)
            cfg = replace(config, lam=float(lam))
            log.info("%s: training (or resuming, or reusing)", name)
            train_backbone(data, out / "backbones" / name, mc, cfg, resume=True, progress=progress, **trainer_kwargs)
    n_ref = reference_n(ns)
    evaluations = [(n, None) for n in ns] + [(n_ref, float(r)) for r in radii]
    for layout, lam in cells:
        name = run_name(data.name, layout, lam)
        folder = out / "backbones" / name
        if not (folder / "summary.json").exists():  # the last file a finished training writes
            continue  # still training elsewhere
        backbone, codes = Backbone.load(folder / "backbone.pt"), None
        for radius in sorted({backbone.eta if r is None else r for _, r in evaluations}):
            todo = sorted({n for n, r in evaluations if (backbone.eta if r is None else r) == radius})
            where = _evaluation_dir(out, name, radius)
            todo = [n for n in todo if not _evaluated(where / f"auroc_{data.name}_n{n}.json", draws, seed,
                                                      backbone.fingerprint)]
            if not todo:
                continue
            with claim(out / "locks" / f"{name}.r{radius:g}.lock") as mine:
                if not mine:
                    continue
                if Backbone.load(folder / "backbone.pt").fingerprint != backbone.fingerprint:
                    continue  # trained on meanwhile by another process: a later pass evaluates the new weights
                drop_cells_of_earlier_weights(where, backbone.fingerprint)
                codes = encode_splits(backbone, data) if codes is None else codes
                log.info("%s: evaluating radius %g at n = %s", name, radius, ", ".join(map(str, todo)))
                evaluate_backbone(backbone, data, where, ns=tuple(todo), draws=draws, seed=seed, radius=radius,
                                  cells=True, progress=progress, codes=codes)
    return write_report(out, data.name, n_ref)


def _evaluated(path: Path, draws: int, seed: int, fingerprint: str) -> bool:
    """Whether the evaluation report ``path`` exists with these draws and seed, of the backbone with this
    fingerprint (one of others is evaluated again: its stored cells give the draws they share; another
    seed is refused there, naming the difference; cells of the backbone's earlier weights are replaced)."""
    if not path.exists():
        return False
    result = json.loads(path.read_text())
    return (result["draws"] == draws and result["seed"] == seed
            and result["settings"].get("backbone_fingerprint") == fingerprint)


def _finished(out: Path, data: str) -> list[dict[str, Any]]:
    """Every finished evaluation in ``out``: run, layout, lambda, radius, the backbone's eta, n, mean AUROC,
    std (all from the evaluation's own file: the report needs no other file of the run)."""
    found = []
    for path in sorted((out / "evaluations").glob(f"*/r*/auroc_{data}_n*.json")):
        run = path.parent.parent.name
        match = re.fullmatch(rf"{re.escape(data)}_(\d+)x(\d+)_lam.+", run)
        if match is None:
            continue
        result = json.loads(path.read_text())
        if result["finished_classes"] != len(result["classes"]) or result["mean"] is None:
            continue
        trained = result["settings"]["backbone"]["train"]
        # exact values: the folders' names have 6 digits, and the table compares the radius with eta
        found.append({"run": run, "layout": Layout(int(match[1]), int(match[2])), "lam": trained["lam"],
                      "radius": result["settings"]["radius"], "eta": trained["eta"],
                      "n": result["n"], "draws": result["draws"],
                      "mean": result["mean"], "std_over_draws": result["std_over_draws"]})
    return found


def write_report(out_dir: str | Path, data: str, n_ref: int = REFERENCE_N) -> Path:
    """ablation_<data>.csv / .md (lambda x layout at n = ``n_ref`` and radius = eta, then the
    sweeps) and ablation_<data>_lambda.png, _radius.png, _n.png, from every finished evaluation in
    ``out_dir``."""
    out = Path(out_dir)
    rows = _finished(out, data)
    at_eta = [r for r in rows if r["radius"] == r["eta"]]
    grid = {(r["layout"], r["lam"]): r for r in at_eta if r["n"] == n_ref}
    layouts = sorted({layout for layout, _ in grid}, key=lambda lay: (lay.branch_dim * lay.branches, lay))
    lams = sorted({lam for _, lam in grid})
    table = [[str(layout)] + [f"{grid[layout, lam]['mean']:.2f}" if (layout, lam) in grid else "-" for lam in lams]
             for layout in layouts]
    missing = sum(row.count("-") for row in table)
    lines = [f"# Ablation on {data}: mean one-class AUROC x 100 (n = {n_ref}, radius = eta)", ""]
    if missing:
        lines += [f"Partial: {missing} of {len(layouts) * len(lams)} cells of this table are not finished "
                  "(not asked for yet, or still running elsewhere).", ""]
    lines.append(reports.markdown_table(["branches x dims"] + [f"lambda {lam:g}" for lam in lams], table))
    # each table ends with a newline: joined by newlines, they are separated by one blank line
    radius_rows = sorted((r for r in rows if r["n"] == n_ref), key=lambda r: (r["run"], r["radius"]))
    n_rows = sorted(at_eta, key=lambda r: (r["run"], r["n"]))
    for title, sweep, key in ((f"Radius sweep (n = {n_ref})", radius_rows, "radius"),
                              ("Sample-count sweep (radius = eta)", n_rows, "n")):
        runs = sorted({r["run"] for r in sweep if sum(s["run"] == r["run"] for s in sweep) > 1})
        if runs:
            values = sorted({r[key] for r in sweep if r["run"] in runs})
            by = {(r["run"], r[key]): r["mean"] for r in sweep}
            lines += [f"## {title}", "", reports.markdown_table(
                ["backbone"] + [f"{key} {v:g}" for v in values],
                [[run] + [f"{by[run, v]:.2f}" if (run, v) in by else "-" for v in values] for run in runs])]
    reports.write_text(out / f"ablation_{data}.md", "\n".join(lines))
    reports.write_csv(out / f"ablation_{data}.csv", ["run", "branches", "branch_dim", "lambda", "radius", "n", "draws",
                                                       "auroc_mean", "std_over_draws"],
                      [[r["run"], r["layout"].branches, r["layout"].branch_dim, f"{r['lam']:g}", f"{r['radius']:g}", r["n"],
                        r["draws"], f"{r['mean']:.4f}", f"{r['std_over_draws']:.4f}"] for r in rows])
    if grid:
        _plot(out / f"ablation_{data}_lambda.png", "lambda", f"AUROC vs lambda (n = {n_ref}, radius = eta)",
              {str(layout): [(lam, grid[layout, lam]["mean"]) for lam in lams if (layout, lam) in grid]
               for layout in layouts}, categorical=True)
    for name, sweep, key, log_x in (("radius", radius_rows, "radius", False), ("n", n_rows, "n", True)):
        series = {run: [(r[key], r["mean"]) for r in sweep if r["run"] == run] for run in {r["run"] for r in sweep}}
        series = {run: points for run, points in sorted(series.items()) if len(points) > 1}
        if series:
            _plot(out / f"ablation_{data}_{name}.png", key, f"AUROC vs {key}", series, log_x=log_x)
    return out / f"ablation_{data}.md"


def _plot(path: Path, xlabel: str, title: str, series: dict[str, list[tuple[float, float]]], *,
          categorical: bool = False, log_x: bool = False) -> None:
    """One line per series of (x, AUROC) points; ``categorical``: x values evenly spaced, labelled."""
    from corel.topology.plots import new_figure, save_figure

    fig = new_figure((6.0, 4.0))
    ax = fig.add_subplot()
    xs = sorted({x for points in series.values() for x, _ in points})
    for label, points in series.items():
        points = sorted(points)
        x = [xs.index(p) for p, _ in points] if categorical else [p for p, _ in points]
        ax.plot(x, [v for _, v in points], "o-", label=label)
    if categorical:
        ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
    if log_x:
        ax.set_xscale("log")
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean AUROC x 100")
    ax.set_title(title)
    ax.legend(fontsize=8)
    save_figure(fig, path)
