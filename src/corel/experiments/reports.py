"""Every result file corel writes: tables (CSV, JSON, Markdown) and charts (PNG), atomically.

Charts use matplotlib's Agg backend through Figure objects, so pyplot's global state is untouched.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from corel._io import atomic_write_json, atomic_write_text
from corel.experiments.protocol import ProtocolResult

write_json = atomic_write_json
write_text = atomic_write_text


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A CSV table with a header row, written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (every cell rendered with str)."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the one-class protocol


def protocol_markdown(result: ProtocolResult) -> str:
    """Per-class AUROC (mean +- std over draws) and the mean, as a Markdown table."""
    rows = [[c, f"{m:.2f} ± {row.std(ddof=1) if len(row) > 1 else 0:.2f}" if done else "not run"]
            for c, m, row, done in zip(result.class_names, result.per_class, result.auroc, result.finished)]
    partial = "" if result.finished.all() else f" ({result.finished.sum()} of {len(result.finished)} classes)"
    rows.append([f"**mean**{partial}", f"**{result.mean:.2f}** ± {result.std_over_draws:.2f}"])
    return markdown_table(["class", f"AUROC ({result.method}, n={result.n}, {result.auroc.shape[1]} draws)"], rows)


def write_protocol(result: ProtocolResult, out_dir: str | Path, stem: str = "auroc") -> list[Path]:
    """<stem>.csv, .json, .md and a bar chart .png of one protocol result in ``out_dir``."""
    out = Path(out_dir)
    paths = [out / f"{stem}.{ext}" for ext in ("csv", "json", "md", "png")]
    rows = [[c, f"{m:.4f}", *[f"{a:.4f}" for a in row]]
            for c, m, row in zip(result.class_names, result.per_class, result.auroc)]
    write_csv(paths[0], ["class", "auroc_mean", *[f"draw_{i}" for i in range(result.auroc.shape[1])]],
              rows + [["mean", f"{result.mean:.4f}"]])
    write_json(paths[1], result.to_dict())
    write_text(paths[2], protocol_markdown(result))
    plot_auroc_bars({result.method: result}, paths[3], title=f"{result.method} on {result.dataset}, n={result.n}")
    return paths


def plot_auroc_bars(results: dict[str, ProtocolResult], path: str | Path, title: str = "") -> None:
    """Grouped bar chart: per-class AUROC of each method, plus each method's mean (the paper's style)."""
    methods = list(results)
    names = results[methods[0]].class_names + ["mean"]
    common = np.logical_and.reduce([r.finished for r in results.values()])  # a fair mean for partial runs
    width = 0.8 / len(methods)
    from corel.topology.plots import new_figure, save_figure  # matplotlib only when a chart is drawn

    fig = new_figure((max(6, 0.6 * len(names) * max(1, len(methods) / 2)), 4))
    ax = fig.add_subplot()
    x = np.arange(len(names))
    for j, m in enumerate(methods):
        mean = results[m].per_class[common].mean() if common.any() else np.nan
        values = [*results[m].per_class, mean]
        ax.bar(x + (j - (len(methods) - 1) / 2) * width, values, width, label=f"{m} ({mean:.1f})")
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, names, rotation=45 if len(names) > 12 else 0, ha="right" if len(names) > 12 else "center")
    ax.set_ylabel("AUROC x 100")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, path)


def write_comparison(results: dict[str, ProtocolResult], stem: Path, title: str = "") -> None:
    """<stem>.md/.csv: per method the mean AUROC over the classes every method finished, and per class;
    <stem>.png: the grouped bar chart."""
    common = np.logical_and.reduce([r.finished for r in results.values()])
    names = next(iter(results.values())).class_names
    scope = "all classes" if common.all() else f"the {common.sum()} of {len(names)} classes every method finished"
    md_rows, csv_rows = [], []
    for m, r in results.items():
        common_mean = float(r.per_class[common].mean()) if common.any() else float("nan")
        md_rows.append([m, f"{common_mean:.2f}", f"{r.std_over_draws:.2f}", f"{r.seconds:.0f}",
                        *[f"{v:.1f}" if np.isfinite(v) else "-" for v in r.per_class]])
        csv_rows.append([m, f"{common_mean:.4f}", f"{r.std_over_draws:.4f}", f"{r.seconds:.1f}",
                         *[f"{v:.4f}" for v in r.per_class]])
    note = f"Mean over {scope}; seconds = fitting and scoring time of the finished cells.\n\n"
    write_text(stem.with_suffix(".md"), note + markdown_table(
        ["method", "mean AUROC", "std over draws", "seconds", *names], md_rows))
    write_csv(stem.with_suffix(".csv"), ["method", "mean", "std_over_draws", "seconds", *names], csv_rows)
    plot_auroc_bars(results, stem.with_suffix(".png"), title=title)


# ----------------------------------------------------------------------------- densification


def write_densification(result: Any, out_dir: str | Path, params: dict[str, Any]) -> None:
    """densification.csv, .json (``params`` + one row per sample size) and .png in ``out_dir``."""
    from corel.topology.plots import plot_densification

    out = Path(out_dir)
    records = [asdict(row) for row in result.rows]
    write_csv(out / "densification.csv", list(records[0]), [list(r.values()) for r in records])
    write_json(out / "densification.json", {**params, "rows": records})
    plot_densification(result, out / "densification.png")


def read_json(path: str | Path) -> Any:
    """A JSON file written by these functions; ValueError naming the file when it does not parse."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from e
