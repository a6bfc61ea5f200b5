"""The batch-size guideline's figures and the densification of death times."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial.distance import cdist

from corel import analyze_densification, batch_size_for_tolerance, batch_size_guideline, densification
from corel.topology.theory import densification_sizes, metric_entropy_count, tolerance_for_batch_size

# issue 6: the paper's notebook curve at D=10, eta=2 gives "roughly" these batch sizes
QUOTED = [((1.7, 2.3), 150), ((1.8, 2.2), 110), ((1.9, 2.1), 80), ((1.95, 2.05), 69)]


@pytest.mark.parametrize("interval, quoted", QUOTED)
def test_quoted_guideline_figures(interval, quoted):
    alpha, beta = interval
    count = metric_entropy_count(10, 2.0, alpha, beta)
    assert abs(count - quoted) < 1  # the formula reproduces the quoted figures to within one point
    # independent evaluation of the second form: shell volume over the volume of a ball of radius eta
    assert count == pytest.approx(((beta + 1) ** 10 - (alpha - 1) ** 10) / 2**10, rel=1e-12)
    assert batch_size_guideline(10, 2.0, alpha, beta) == round(count)


def test_guideline_exact_values_and_tolerance_form():
    counts = [metric_entropy_count(10, 2.0, a, b) for (a, b), _ in QUOTED]
    np.testing.assert_allclose(counts, [149.568, 109.951, 80.041, 68.029], atol=1e-3)
    assert [batch_size_for_tolerance(10, 2.0, t) for t in (0.15, 0.1, 0.05, 0.025)] == [150, 110, 80, 68]
    assert metric_entropy_count(1, 2.0, 1.0, 3.0) == pytest.approx(2.0)  # D=1: (beta - alpha) / eta + 1
    assert metric_entropy_count(10, 2.0, 0.5, 2.0) == pytest.approx(1.5**10)  # alpha < eta/2: a whole ball


def test_guideline_of_wide_branches():
    """(2 beta / eta + 1)^D overflowed long before the count itself (an OverflowError traceback)."""
    assert metric_entropy_count(1000, 2.0, 1.98, 2.02) == pytest.approx(1.51**1000 - 0.49**1000, rel=1e-12)
    assert batch_size_for_tolerance(1000, 2.0, 0.01) == round(1.51**1000)
    assert metric_entropy_count(3000, 2.0, 1.98, 2.02) == math.inf
    with pytest.raises(ValueError, match="exceeds the float range.*every batch size fits"):
        batch_size_for_tolerance(3000, 2.0, 0.01)
    assert tolerance_for_batch_size(100, 3000, 2.0) == 0.0


def test_guideline_of_numpy_numbers():
    """numpy inputs computed in their own precision: float32 overflowed to inf from D = 216 at 1 %
    (refused as beyond the float range), an int64 dim overflowed with a RuntimeWarning."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        count = metric_entropy_count(np.int64(300), np.float32(2.0), np.float32(1.98), np.float32(2.02))
        assert type(count) is float and count == metric_entropy_count(300, 2.0, float(np.float32(1.98)),
                                                                     float(np.float32(2.02)))
        assert batch_size_for_tolerance(np.int64(300), 2.0, np.float32(0.01)) == pytest.approx(1.51**300, rel=1e-5)
        with pytest.raises(ValueError, match="exceeds the float range"):
            batch_size_guideline(np.int64(3000), 2.0, 1.98, 2.02)
        assert tolerance_for_batch_size(100, np.int64(3000), np.float32(2.0)) == 0.0
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        metric_entropy_count(10, 2.0, "1.9", 2.1)


def test_reverse_guideline():
    assert tolerance_for_batch_size(50, 10, 2.0) == 0.0  # (3/2)^10 - (1/2)^10 = 57.7 >= 50 at zero tolerance
    for size, dim in [(80, 10), (100, 10), (150, 10), (1000, 10), (17000, 1), (10 ** 9, 1)]:
        # (above 8,192 no two doubles were 1e-12 apart: an absolute stopping rule never stopped)
        t = tolerance_for_batch_size(size, dim, 2.0)
        assert metric_entropy_count(dim, 2.0, max(0.0, 2 * (1 - t)), 2 * (1 + t)) == pytest.approx(size, rel=1e-9)
    assert tolerance_for_batch_size(100, 10, 2.0) < tolerance_for_batch_size(150, 10, 2.0)
    assert tolerance_for_batch_size(100, 10, 2.0) == tolerance_for_batch_size(100, 10, 5.0)  # scale free


@pytest.mark.parametrize("call, message", [
    (lambda: batch_size_guideline(0, 2.0, 1.0, 2.0), "dim"), (lambda: batch_size_guideline(10, 0.0, 1.0, 2.0), "eta"),
    (lambda: batch_size_guideline(10, 2.0, 2.1, 2.0), "alpha"), (lambda: batch_size_for_tolerance(10, 2.0, 1.5), "tolerance"),
    (lambda: tolerance_for_batch_size(0, 10, 2.0), "batch_size"),
])
def test_guideline_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_default_sizes():
    assert densification_sizes(100, 50000) == [100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000]
    assert densification_sizes(100, 100) == [100]
    assert densification_sizes(10, 35) == [10, 20, 35]


def test_death_times_shrink_as_samples_grow(rng):
    codes = rng.normal(size=(3000, 8)).astype(np.float32)
    result = densification(codes, [50, 300, 3000], eta=2.0, branches=2, seed=1)
    medians = [row.median for row in result.rows]
    within = [row.within_eta for row in result.rows]
    assert medians[0] > medians[1] > medians[2]
    assert within[0] < within[1] < within[2]
    assert result.deaths[300].shape == (2, 299)
    for row in result.rows:
        assert row.q05 <= row.q25 <= row.median <= row.q75 <= row.q95


def test_densification_against_oracles(rng):
    codes = rng.normal(size=(400, 6))
    result = densification(codes, [120], eta=1.5, metric="l2", branches=3, seed=7)
    subset = codes[np.random.default_rng(7).permutation(400)[:120]]
    deaths, nearest = [], []
    for branch in range(3):
        part = subset[:, 2 * branch: 2 * branch + 2]
        dist = cdist(part, part)
        deaths.append(np.sort(minimum_spanning_tree(dist).data))
        np.fill_diagonal(dist, np.inf)
        nearest.append(dist.min(axis=1))
    np.testing.assert_allclose(result.deaths[120], np.stack(deaths), rtol=1e-12)
    row = result.rows[0]
    assert row.within_eta == pytest.approx((np.concatenate(nearest) <= 1.5).mean())
    assert row.median == pytest.approx(np.median(np.concatenate(deaths)))


def test_analyze_writes_outputs_and_encode_function_matches_codes(rng, tmp_path):
    codes = rng.normal(size=(500, 4)).astype(np.float32)
    calls = []

    def encode(indices):
        calls.append(len(indices))
        return torch.from_numpy(codes[indices])

    from_codes = analyze_densification(codes, tmp_path / "a", eta=1.0, batch_size=50, branches=2, seed=3)
    from_fn = analyze_densification(encode, tmp_path / "b", eta=1.0, sizes=[50, 100, 250], num_samples=500,
                                    branches=2, seed=3)
    assert calls == [250]  # only the largest subset is encoded, once
    assert [r.size for r in from_codes.rows] == [50, 100, 250, 500]
    assert from_codes.rows[:3] == from_fn.rows  # same seed, same subsets
    with open(tmp_path / "a" / "densification.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["size"]) for r in rows] == [50, 100, 250, 500]
    assert float(rows[0]["median"]) == pytest.approx(from_codes.rows[0].median)
    saved = json.loads((tmp_path / "a" / "densification.json").read_text())
    assert saved["eta"] == 1.0 and saved["branches"] == 2 and len(saved["rows"]) == 4
    assert (tmp_path / "a" / "densification.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("kwargs, message", [
    ({"sizes": [10, 600]}, "sample sizes"), ({"sizes": [1]}, "sample sizes"), ({"branches": 3}, "divisible"),
    ({"eta": 0.0}, "eta"), ({"metric": "l7"}, "metric"),
])
def test_densification_bad_input(rng, kwargs, message):
    args = {"sizes": [10, 100], "eta": 1.0, "branches": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        densification(rng.normal(size=(500, 4)), **args)


def test_analyze_bad_input(rng, tmp_path):
    with pytest.raises(ValueError, match="num_samples"):
        analyze_densification(lambda idx: None, tmp_path, eta=1.0, batch_size=10)
    with pytest.raises(ValueError, match="sizes or batch_size"):
        analyze_densification(rng.normal(size=(50, 2)), tmp_path, eta=1.0)
    with pytest.raises(ValueError, match="shape"):
        densification(np.zeros(5), [2], eta=1.0)
    with pytest.raises(ValueError, match="NaN"):
        densification(np.full((5, 2), np.nan), [5], eta=1.0)
