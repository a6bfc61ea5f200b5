"""The paper's theory as tools: the batch-size guideline and the densification of death times.

Batch-size guideline (metric entropy).  For a branch of dimension D trained at scale eta, the
guideline curve of Hofer et al., "Connectivity-Optimized Representation Learning via Persistent
Homology" (ICML 2019), as given by the authors' notebook and quoted in corel issue 6, is

    C(D, eta, alpha, beta) = ((2 beta / eta + 1)^D - max(0, 2 alpha / eta - 1)^D) / 2^D
                           = [(beta + eta/2)^D - max(0, alpha - eta/2)^D] / eta^D,

the volume of the shell between radii alpha - eta/2 and beta + eta/2 over the volume of a ball
of radius eta (every norm's balls scale as r^D, so C is the same for l1, l2 and linf): a
metric-entropy (covering-number) estimate of how many points can sit at mutual scale eta with
all their 0-dim death times in [alpha, beta].  It is an estimate, not a strict bound (a strict
packing bound would divide by the ball of radius eta/2 and be 2^D times larger).  For D = 10,
eta = 2 it is 149.6 / 110.0 / 80.0 / 68.0 for [alpha, beta] = [1.7, 2.3] / [1.8, 2.2] /
[1.9, 2.1] / [1.95, 2.05], the figures behind the paper's batch size 100 for 10-dim branches.

Densification.  After training at batch size b, samples of size N >> b pack tighter than eta:
their 0-dim death times shrink as N grows.  :func:`densification` measures that on encoded
samples, exactly (the memory-bounded H0 of :mod:`corel.topology.h0`).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import torch
from torch import Tensor

from corel._checks import check_ints, check_number
from corel.topology.distances import Metric, check_scale, metric_order
from corel.topology.h0 import h0_persistence

Codes = Union[Tensor, np.ndarray]


def _check_geometry(dim: int, eta: float) -> tuple[int, float]:
    """``dim`` and ``eta`` as Python numbers: numpy ones computed the count in their own precision
    (float32: inf from D = 216 at a tolerance of 1 %, where float64 holds it) and overflowed with a RuntimeWarning."""
    check_ints(1, dim=dim)
    return int(dim), check_scale(eta, "eta")


def metric_entropy_count(dim: int, eta: float, alpha: float, beta: float) -> float:
    """C(D, eta, alpha, beta) of the module docstring, for branch dimension ``dim``."""
    dim, eta = _check_geometry(dim, eta)
    alpha, beta = check_number(alpha, "alpha"), check_number(beta, "beta")
    if not alpha <= beta:
        raise ValueError(f"need 0 <= alpha <= beta < inf, got alpha={alpha!r}, beta={beta!r}")
    try:  # the second form: (2 beta / eta + 1)^D overflowed from D = 647 (at eta = 2, beta = 2.02)
        return (beta / eta + 0.5) ** dim - max(0.0, alpha / eta - 0.5) ** dim
    except OverflowError:  # beyond the float range (D in the thousands): no batch size comes near it
        return math.inf


def batch_size_guideline(dim: int, eta: float, alpha: float, beta: float) -> int:
    """The batch size up to which a branch of dimension ``dim`` can have all its 0-dim death
    times in [alpha, beta] around ``eta``: C(dim, eta, alpha, beta) of the module docstring,
    rounded.  For dim=10, eta=2: [1.7, 2.3] -> 150, [1.8, 2.2] -> 110, [1.9, 2.1] -> 80,
    [1.95, 2.05] -> 68.
    """
    count = metric_entropy_count(dim, eta, alpha, beta)
    if count == math.inf:
        raise ValueError(f"the guideline for dim {dim} exceeds the float range ({sys.float_info.max:.3g}): "
                         "every batch size fits")
    return round(count)


def batch_size_for_tolerance(dim: int, eta: float, tolerance: float) -> int:
    """:func:`batch_size_guideline` for [alpha, beta] = [eta (1 - tolerance), eta (1 + tolerance)]."""
    if not 0 <= tolerance <= 1:
        raise ValueError(f"tolerance must be in [0, 1] (relative to eta), got {tolerance!r}")
    return batch_size_guideline(dim, eta, eta * (1 - tolerance), eta * (1 + tolerance))


def tolerance_for_batch_size(batch_size: int, dim: int, eta: float) -> float:
    """The reverse: the smallest relative tolerance t with C(dim, eta, eta (1-t), eta (1+t)) >=
    ``batch_size``, i.e. how tightly around eta all death times of a batch of that size can lie.

    0 when even t = 0 allows the batch (C at t = 0 is (3/2)^D - (1/2)^D); C grows with t, so
    bisection finds it to 1e-12 relative.
    """
    dim, eta = _check_geometry(dim, eta)
    check_ints(1, batch_size=batch_size)

    def bound(t: float) -> float:
        return metric_entropy_count(dim, eta, max(0.0, eta * (1 - t)), eta * (1 + t))

    if bound(0.0) >= batch_size:
        return 0.0
    low, high = 0.0, 1.0
    while bound(high) < batch_size:
        low, high = high, 2 * high
    while high - low > 1e-12 * high:  # relative: above 8,192 no two doubles are 1e-12 apart
        mid = (low + high) / 2
        if not low < mid < high:  # adjacent doubles: as close as it gets
            break
        low, high = (low, mid) if bound(mid) >= batch_size else (mid, high)
    return high


@dataclass(frozen=True)
class DensificationRow:
    """Statistics of the 0-dim death times of N samples, pooled over branches (units of the metric).

    within_eta: fraction of (point, branch) pairs whose nearest neighbour is at distance <= eta.
    """

    size: int
    mean: float
    median: float
    q05: float
    q25: float
    q75: float
    q95: float
    within_eta: float


@dataclass
class Densification:
    """Result of :func:`densification`: one row per sample size, and the death times themselves
    (``deaths[N]`` is (branches, N - 1), each branch's row ascending)."""

    eta: float
    metric: Metric
    branches: int
    seed: int
    rows: list[DensificationRow]
    deaths: dict[int, np.ndarray]


def densification_sizes(batch_size: int, total: int) -> list[int]:
    """Sample sizes b, 2b, 5b, 10b, 20b, 50b, ... below ``total``, then ``total`` itself."""
    if not 2 <= batch_size:
        raise ValueError(f"batch_size must be >= 2, got {batch_size!r}")
    if not 2 <= total:
        raise ValueError(f"need at least 2 samples, got {total!r}")
    sizes, scale = [], 1
    while True:
        for step in (1, 2, 5):
            if step * scale * batch_size >= total:
                return sizes + [total]
            sizes.append(step * scale * batch_size)
        scale *= 10


def as_codes(codes: Codes) -> Tensor:
    if isinstance(codes, np.ndarray):
        codes = torch.from_numpy(codes)
    if not isinstance(codes, Tensor) or not codes.is_floating_point():
        raise ValueError("codes must be a floating array or tensor of shape (N, D)")
    if codes.ndim != 2 or codes.shape[0] < 2 or codes.shape[1] < 1:
        raise ValueError(f"codes must have shape (N, D) with N >= 2, got {tuple(codes.shape)}")
    return codes.detach().cpu()


def check_sizes(sizes: Sequence[int], total: int) -> list[int]:
    sizes = sorted(set(int(s) for s in sizes))
    if not sizes or sizes[0] < 2 or sizes[-1] > total:
        raise ValueError(f"sample sizes must lie in [2, {total}] (the number of codes), got {sizes}")
    return sizes


def densify(ordered: Tensor, sizes: list[int], eta: float, metric: Metric, branches: int,
             seed: int) -> Densification:
    """Statistics on the prefixes ``ordered[:N]`` of codes already in random order."""
    n_all, dim = ordered.shape
    rows, deaths_by_size = [], {}
    for size in sizes:
        clouds = ordered[:size].reshape(size, branches, dim // branches).transpose(0, 1)
        with torch.no_grad():
            h0 = h0_persistence(clouds.contiguous(), metric)
        deaths, edges = h0.deaths.double().numpy(), h0.edges.numpy()
        # A point's nearest neighbour is always joined by one of its tree edges (cut property).
        nearest = np.full((branches, size), np.inf)
        branch = np.arange(branches)[:, None]
        np.minimum.at(nearest, (branch, edges[..., 0]), deaths)
        np.minimum.at(nearest, (branch, edges[..., 1]), deaths)
        q05, q25, median, q75, q95 = np.quantile(deaths, [0.05, 0.25, 0.5, 0.75, 0.95])
        rows.append(DensificationRow(size, float(deaths.mean()), float(median), float(q05), float(q25),
                                     float(q75), float(q95), float((nearest <= eta).mean())))
        deaths_by_size[size] = deaths
    return Densification(eta, metric, branches, seed, rows, deaths_by_size)


def check_analysis(eta: float, metric: Metric, branches: int, dim: int | None = None) -> None:
    """ValueError unless eta is a length, metric an l_p metric and dim splits into ``branches``."""
    check_scale(eta, "eta")
    metric_order(metric)
    check_ints(1, branches=branches)
    if dim is not None and dim % branches:
        raise ValueError(f"code dimension {dim} is not divisible into {branches} branches")


def densification(codes: Codes, sizes: Sequence[int], eta: float, metric: Metric = "l1", branches: int = 1,
                  seed: int = 0) -> Densification:
    """0-dim death times of nested random subsets of ``codes`` (N, D), one per size in ``sizes``.

    The codes are split into ``branches`` equal consecutive blocks (as the connectivity loss
    does); each subset's exact H0 is computed per branch on CPU without an N x N matrix (memory
    O(N D)), so N in the tens of thousands fits.  Subsets are prefixes of one permutation drawn
    from ``seed``, so a larger N always contains the smaller samples.
    """
    codes = as_codes(codes)
    check_analysis(eta, metric, branches, codes.shape[1])
    sizes = check_sizes(sizes, codes.shape[0])
    order = torch.from_numpy(np.random.default_rng(seed).permutation(codes.shape[0]))
    return densify(codes[order[: sizes[-1]]], sizes, eta, metric, branches, seed)
