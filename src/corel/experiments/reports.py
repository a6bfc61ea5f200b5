"""Every result file corel writes: tables (CSV, JSON, Markdown) and charts (PNG), atomically.

Charts use matplotlib's Agg backend through Figure objects, so pyplot's global state is untouched.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from corel._io import atomic_write, atomic_write_json, atomic_write_text
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


def auroc_percent(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """AUROC x 100 of ``scores`` (higher = more normal) against ``labels`` (True = normal), one per
    score; None where all labels are alike (no ROC curve exists)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, dtype=bool)
    if labels.shape != np.shape(scores):
        raise ValueError(f"need one label per image: {labels.size} labels for {np.size(scores)} images")
    if labels.all() or not labels.any():
        return None
    return 100 * float(roc_auc_score(labels, scores))


def number(value: float, spec: str, missing: str = "") -> str:
    """``value`` formatted with ``spec`` (e.g. ".2f"), or ``missing`` where it is NaN or infinite (a cell
    not computed): no table says "nan" as if it were a number."""
    return format(value, spec) if np.isfinite(value) else missing


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (every cell rendered with str)."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the one-class protocol


def protocol_markdown(result: ProtocolResult) -> str:
    """Per-class AUROC (mean +- std over draws) and the mean, as a Markdown table."""
    draws = result.auroc.shape[1]
    spread = (lambda v: f" ± {v:.2f}") if draws > 1 else (lambda v: "")  # one draw has no spread
    rows = [[c, f"{m:.2f}{spread(row.std(ddof=1) if len(row) > 1 else 0)}" if done else "not run"]
            for c, m, row, done in zip(result.class_names, result.per_class, result.auroc, result.finished)]
    partial = "" if result.finished.all() else f" ({result.finished.sum()} of {len(result.finished)} classes)"
    mean = f"**{result.mean:.2f}**{spread(result.std_over_draws)}" if result.finished.any() else "-"
    rows.append([f"**mean**{partial}", mean])
    caption = f"{draws} draws" if draws > 1 else "1 draw"
    return markdown_table(["class", f"AUROC ({result.method}, n={result.n}, {caption})"], rows)


def write_protocol(result: ProtocolResult, out_dir: str | Path, stem: str = "auroc") -> list[Path]:
    """<stem>.csv, .json, .md and a bar chart .png of one protocol result in ``out_dir``."""
    out = Path(out_dir)
    paths = [out / f"{stem}.{ext}" for ext in ("csv", "json", "md", "png")]
    rows = [[c, number(m, ".4f"), *[number(a, ".4f") for a in row]]  # an empty cell: not computed
            for c, m, row in zip(result.class_names, result.per_class, result.auroc)]
    write_csv(paths[0], ["class", "auroc_mean", *[f"draw_{i}" for i in range(result.auroc.shape[1])]],
              rows + [["mean", number(result.mean, ".4f")]])
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
        ax.bar(x + (j - (len(methods) - 1) / 2) * width, values, width, label=f"{m} ({number(mean, '.1f', '-')})")
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    crowded = len(names) > 12 or max(map(len, names)) > 5  # CIFAR-10's names ran into each other upright
    ax.set_xticks(x, names, rotation=45 if crowded else 0, ha="right" if crowded else "center")
    ax.set_ylabel("AUROC x 100")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, path)


def write_comparison(results: dict[str, ProtocolResult], stem: Path, title: str = "") -> None:
    """<stem>.md/.csv: per method the mean AUROC (and its std over draws) over the classes every method
    finished, and per class; <stem>.png: the grouped bar chart."""
    common = np.logical_and.reduce([r.finished for r in results.values()])
    names = next(iter(results.values())).class_names
    scope = "all classes" if common.all() else f"the {common.sum()} of {len(names)} classes every method finished"
    md_rows, csv_rows = [], []
    for m, r in results.items():
        common_mean = float(r.per_class[common].mean()) if common.any() else float("nan")
        spread = r.spread_over_draws(common)  # over the classes of the mean beside it
        md_rows.append([m, number(common_mean, ".2f", "-"), f"{spread:.2f}", f"{r.seconds:.0f}",
                        *[number(v, ".1f", "-") for v in r.per_class]])
        csv_rows.append([m, number(common_mean, ".4f"), f"{spread:.4f}", f"{r.seconds:.1f}",
                         *[number(v, ".4f") for v in r.per_class]])
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


# ----------------------------------------------------------------------------- novelty reports

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.15em; margin-top: 2em; }}
.strip {{ display: flex; flex-wrap: wrap; gap: 6px; }}
figure.thumb {{ margin: 0; text-align: center; font-size: 0.75em; width: 72px; overflow-wrap: anywhere; }}
figure.thumb img {{ width: 64px; height: 64px; image-rendering: pixelated; border: 3px solid #ccc; }}
figure.thumb.novel img {{ border-color: #d62728; }} figure.thumb.normal img {{ border-color: #2ca02c; }}
img.chart {{ max-width: 100%; }} table {{ border-collapse: collapse; }} td, th {{ padding: 0.2em 0.8em; text-align: left; }}
</style></head><body>
<h1>{title}</h1>
{body}
</body></html>
"""


def _png_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _data_uri(png: bytes) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(png).decode()


def _thumbnail(image: np.ndarray) -> bytes:
    """uint8 (C, H, W) -> PNG bytes."""
    from PIL import Image

    pixels = image.transpose(1, 2, 0)
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _grid(images: list[np.ndarray], captions: list[str], columns: int = 12):
    """A Figure of thumbnails with captions (the PNG twin of a strip in the page)."""
    from corel.topology.plots import new_figure

    rows = max(1, -(-len(images) // columns))
    fig = new_figure((columns * 0.9, rows * 1.1))
    for i, (image, caption) in enumerate(zip(images, captions)):
        ax = fig.add_subplot(rows, columns, i + 1)
        pixels = image.transpose(1, 2, 0)
        ax.imshow(pixels[..., 0] if pixels.shape[2] == 1 else pixels, cmap="gray", interpolation="nearest")
        ax.set_title(caption, fontsize=6)
        ax.axis("off")
    return fig


def html(path: str | Path, scores: np.ndarray, threshold: float, *, names: Sequence[str] | None = None,
         images: np.ndarray | dict[int, np.ndarray] | None = None, fitted: np.ndarray | None = None,
         labels: np.ndarray | None = None, title: str = "corel novelty report", top: int = 12) -> Path:
    """One self-contained HTML page (every image inside it as a data URI; nothing fetched, no
    scripts) about scored images, plus its figures as PNG beside it (<stem>_*.png).

    ``scores`` (N,) higher = more normal, ``threshold`` the detector's ``offset_`` (below it:
    novel); ``names`` of the images; ``images``: uint8 (N, C, H, W), or a dict index -> (C, H, W)
    holding at least the ``top`` most novel and most normal ones; ``fitted``: uint8 images the
    detector was fitted on (a strip of thumbnails); ``labels`` (N,) bool, True = normal: adds the
    ROC curve and the AUROC.  Returns the page's path.
    """
    from html import escape

    from corel.topology.plots import new_figure

    path = Path(path)
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    if n == 0:
        raise ValueError("no scores to report")
    names = [str(i) for i in range(n)] if names is None else [str(s) for s in names]
    if len(names) != n:
        raise ValueError(f"{len(names)} names for {n} scores")
    label = [escape(Path(name).name) for name in names]
    novel = scores < threshold
    body = [f"<p>{n} images scored; <b>{int(novel.sum())}</b> novel (score below the threshold {threshold:g}), "
            f"{n - int(novel.sum())} normal.  The score counts the fitted samples' codes near an image's code: "
            "higher is more normal.</p>"]
    stem = path.with_suffix("")
    figures: dict[str, object] = {}

    def strip(heading: str, ranked: np.ndarray) -> None:
        """Thumbnails of the first ``top`` of ``ranked`` whose images are at hand."""
        if images is None:
            return
        shown = [(i, images[i]) for i in ranked if isinstance(images, np.ndarray) or i in images][:top]
        cells = "".join(f'<figure class="thumb {"novel" if novel[i] else "normal"}">'
                        f'<img src="{_data_uri(_thumbnail(img))}" alt="{label[i]}" title="{escape(names[i])}">'
                        f"<figcaption>{scores[i]:g}<br>{label[i]}</figcaption></figure>" for i, img in shown)
        body.append(f"<h2>The {len(shown)} {heading}</h2><div class=\"strip\">{cells}</div>")
        figures[heading] = _grid([img for _, img in shown], [f"{scores[i]:g}" for i, _ in shown])

    if fitted is not None:
        cells = "".join(f'<figure class="thumb"><img src="{_data_uri(_thumbnail(img))}" alt="fitted sample {k}">'
                        "</figure>" for k, img in enumerate(fitted))
        body.append(f"<h2>The {len(fitted)} fitted samples</h2><div class=\"strip\">{cells}</div>")
        figures["fitted"] = _grid(list(fitted), [""] * len(fitted), columns=16)
    order = np.argsort(scores, kind="stable")
    strip("most novel images", order)
    strip("most normal images", order[::-1])
    hist = new_figure((6.0, 3.2))
    ax = hist.add_subplot()
    ax.hist(scores, bins=min(50, max(10, n // 5)), color="tab:blue", alpha=0.8)
    ax.axvline(threshold, color="tab:red", lw=1.5, label=f"threshold {threshold:g}")
    ax.set_xlabel("score (higher = more normal)")
    ax.set_ylabel("images")
    ax.legend()
    figures["histogram"] = hist
    body.append("<h2>Scores</h2>{histogram}")
    auroc = None if labels is None else auroc_percent(labels, scores)
    if labels is not None and auroc is None:
        kind = "normal" if np.asarray(labels).all() else "novel"
        body.append(f"<h2>Against the labels</h2><p>Every image is labelled {kind}: no ROC curve.</p>")
    elif labels is not None:
        from sklearn.metrics import roc_curve

        fpr, tpr, _ = roc_curve(labels, scores)
        roc = new_figure((4.0, 4.0))
        ax = roc.add_subplot()
        ax.plot(fpr, tpr, color="tab:blue", label=f"AUROC {auroc:.2f}")
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8)
        ax.set_xlabel("false positive rate (novel called normal)")
        ax.set_ylabel("true positive rate (normal called normal)")
        ax.legend(loc="lower right")
        figures["roc"] = roc
        body.append(f"<h2>Against the labels: AUROC {auroc:.2f}</h2>{{roc}}")
    page = "\n".join(body)
    for key, fig in figures.items():
        png = _png_bytes(fig)
        slug = {"most novel images": "novel", "most normal images": "normal"}.get(key, key)
        atomic_write(f"{stem}_{slug}.png", lambda f, png=png: f.write(png))
        if key in ("histogram", "roc"):
            page = page.replace("{" + key + "}", f'<img class="chart" src="{_data_uri(png)}" alt="{key}">')
    atomic_write_text(path, _PAGE.format(title=escape(title), body=page))
    return path
