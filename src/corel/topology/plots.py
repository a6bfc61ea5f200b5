"""Plots of persistence results (matplotlib, rendered with Agg; pyplot's global state is untouched).

Every function draws into ``ax`` when one is given (and returns its Figure), else into a new
Figure; with ``path`` the figure is also written there (PNG, or any format matplotlib infers
from the suffix).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from corel._io import atomic_write
from corel.topology.diagram import persistence_pairs
from corel.topology.distances import check_scale

_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")


def _numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double()  # numpy has no bfloat16
    return np.asarray(values, dtype=np.float64)


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A Figure with an Agg canvas, outside pyplot."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> None:
    """Writes ``fig`` to ``path`` (PNG, or the format of the suffix) atomically."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi, bbox_inches="tight"))


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = new_figure(figsize)
    return fig, fig.add_subplot()


def _finish(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        save_figure(fig, path)
    return fig


def _dimensions(result: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(_numpy(finite).reshape(-1, 2), _numpy(essential).reshape(-1))
            for finite, essential in persistence_pairs(result)]


def _extent(dims: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Where infinite bars are drawn: a little beyond every finite value."""
    values = np.concatenate([np.concatenate([f.ravel(), e]) for f, e in dims])
    top = values.max() if values.size else 0.0
    return 1.1 * top if top > 0 else 1.0


def plot_barcode(result: Any, path: str | Path | None = None, *, ax: Axes | None = None,
                 title: str | None = None) -> Figure:
    """Barcode of one cloud's persistence: one horizontal bar per class, grouped by dimension.

    ``result``: anything :func:`corel.topology.diagram.as_diagrams` accepts.  Essential classes run to
    the right edge and end in an arrow.
    """
    dims = _dimensions(result)
    fig, ax = _axes(ax, (6.0, 4.0))
    right = _extent(dims)
    row = 0
    for k, (finite, essential) in enumerate(dims):
        color = _COLORS[k % len(_COLORS)]
        finite = finite[np.lexsort((finite[:, 1], finite[:, 0]))]
        rows = np.arange(row, row + len(finite))
        ax.hlines(rows, finite[:, 0], finite[:, 1], color=color, lw=1.5, label=f"H{k}")
        row += len(finite)
        rows = np.arange(row, row + len(essential))
        ax.hlines(rows, np.sort(essential), right, color=color, lw=1.5)
        ax.plot(np.full(len(essential), right), rows, ">", color=color, ms=4)
        row += len(essential)
    ax.set_xlim(0.0, 1.03 * right)
    ax.set_ylim(-1, max(row, 1))
    ax.set_yticks([])
    ax.set_xlabel("filtration value (distance)")
    ax.legend(loc="lower right")
    ax.set_title(title or "persistence barcode")
    return _finish(fig, path)


def plot_diagram(result: Any, path: str | Path | None = None, *, ax: Axes | None = None,
                 title: str | None = None) -> Figure:
    """Persistence diagram of one cloud: (birth, death) points per dimension, above the diagonal.

    Essential classes are drawn on a dashed line marked "inf" above every finite death.
    """
    dims = _dimensions(result)
    fig, ax = _axes(ax, (4.5, 4.5))
    top = _extent(dims)
    for k, (finite, essential) in enumerate(dims):
        color = _COLORS[k % len(_COLORS)]
        ax.scatter(finite[:, 0], finite[:, 1], s=12, color=color, label=f"H{k}")
        ax.scatter(essential, np.full(len(essential), top), s=24, marker="^", color=color)
    ax.plot([0, top], [0, top], color="gray", lw=0.8)
    ax.axhline(top, color="gray", lw=0.8, ls="--")
    ax.text(0.0, top, " inf", va="bottom", color="gray")
    ax.set_xlim(-0.02 * top, 1.05 * top)
    ax.set_ylim(-0.02 * top, 1.08 * top)
    ax.set_xlabel("birth")
    ax.set_ylabel("death")
    ax.legend(loc="lower right")
    ax.set_title(title or "persistence diagram")
    return _finish(fig, path)


def death_time_histogram(deaths: Any, eta: float, path: str | Path | None, title: str | None = None, *,
                         ax: Axes | None = None, bins: int = 50) -> Figure:
    """Histogram of 0-dim death times (array-like of any shape, pooled) with ``eta`` marked."""
    values = _numpy(deaths).ravel()
    if values.size == 0:
        raise ValueError("no death times to plot")
    if not np.isfinite(values).all():
        raise ValueError("death times contain NaN or inf values")
    check_scale(eta, "eta")
    fig, ax = _axes(ax, (6.0, 4.0))
    ax.hist(values, bins=bins, color="tab:blue", alpha=0.8)
    ax.axvline(eta, color="tab:red", lw=1.5, label=f"eta = {eta:g}")
    ax.axvline(np.median(values), color="black", lw=1.0, ls="--", label=f"median = {np.median(values):.3g}")
    ax.set_xlabel("death time")
    ax.set_ylabel("count")
    ax.legend()
    ax.set_title(title or f"0-dim death times ({values.size} values)")
    return _finish(fig, path)


def plot_densification(result: Any, path: str | Path | None = None, *, title: str | None = None) -> Figure:
    """Death-time distribution (box per sample size N, whiskers at 5/95%) and the fraction of
    points with a neighbour within eta, against N, for a :class:`corel.topology.theory.Densification`."""
    sizes = [row.size for row in result.rows]
    fig = new_figure((10.0, 4.0))
    left, right = fig.subplots(1, 2)
    left.boxplot([result.deaths[size].ravel() for size in sizes], whis=(5, 95), showfliers=False)
    left.set_xticks(range(1, len(sizes) + 1), [str(size) for size in sizes])
    left.axhline(result.eta, color="tab:red", lw=1.5, label=f"eta = {result.eta:g}")
    left.set_xlabel("sample size N")
    left.set_ylabel("0-dim death time")
    left.legend()
    right.plot(sizes, [row.within_eta for row in result.rows], "o-")
    right.set_xscale("log")
    right.set_ylim(0, 1.02)
    right.set_xlabel("sample size N")
    right.set_ylabel("fraction with a neighbour within eta")
    fig.suptitle(title or f"densification ({result.branches} branch(es), metric {result.metric})")
    return _finish(fig, path)
