"""Borůvka's schedules against the compiled kernel and the Kruskal oracle: the neighbour lists,
row tiles, and the l2 screening through the matmul expansion (exact on clustered clouds, under
reduced matmul precision, and actually saving the exact rows where it can)."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from conftest import canonical_tree
from corel import h0_persistence, h0_persistence_from_distances
from corel.topology import boruvka

SCIPY = {"l1": {"metric": "cityblock"}, "l2": {"metric": "euclidean"}, "linf": {"metric": "chebyshev"}}


def _clouds(rng) -> dict[str, np.ndarray]:
    grid = np.stack(np.meshgrid(np.arange(6), np.arange(5), np.arange(4)), -1).reshape(-1, 3).astype(float)
    return {
        "random": rng.normal(size=(3, 150, 40)),
        "duplicates": np.repeat(rng.normal(size=(3, 30, 40)), 7, axis=1),  # more copies than a list holds
        "integer grid with duplicates": np.concatenate([grid, grid[:30], rng.integers(0, 4, size=(30, 3))])[None],
        "ties": rng.integers(0, 3, size=(2, 150, 40)).astype(float),
        "clustered": np.concatenate([rng.normal(size=(2, 60, 160)) * 1e-3 + 100, rng.normal(size=(2, 60, 160)) * 1e-3 - 100,
                                     rng.normal(size=(2, 20, 160)) * 1e-3], axis=1),
        "one cluster and a spread cloud": np.stack([rng.normal(size=(120, 40)) * 1e-3 + 7, rng.normal(size=(120, 40))]),
    }


@pytest.fixture
def lists(monkeypatch):
    """Every cloud on the neighbour-list schedule, with lists short enough to run out, and l2
    screened from dimension 1 on."""
    monkeypatch.setattr(boruvka, "LIST_MIN_POINTS", 0)
    monkeypatch.setattr(boruvka, "LIST_LENGTH", 3)
    monkeypatch.setattr(boruvka, "SCREEN_MIN_DIM", 1)
    return monkeypatch


@pytest.mark.parametrize("kind", ["random", "duplicates", "integer grid with duplicates", "ties", "clustered",
                                  "one cluster and a spread cloud"])
@pytest.mark.parametrize("metric", ["l1", "l2", "linf"])
@pytest.mark.parametrize("layout", ["whole matrix", "row tiles"])
def test_neighbour_lists_give_the_canonical_tree(rng, lists, kind, metric, layout):
    clouds = _clouds(rng)[kind]
    if layout == "row tiles":
        lists.setattr(boruvka, "FULL_MATRIX_ELEMENTS", 0)
        lists.setattr(boruvka, "TILE_ELEMENTS", 37 * clouds.shape[1])  # 37 rows a tile
    exact = kind in ("duplicates", "integer grid with duplicates", "ties")
    # every engine rounds l1, l2 and linf alike, so float32 trees are equal too, near ties included
    for dtype in (torch.float64, torch.float32):
        x = torch.from_numpy(clouds).to(dtype)
        res = h0_persistence(x, metric, backend="torch")
        native = h0_persistence(x, metric, backend="native")
        assert torch.equal(res.edges, native.edges) and torch.equal(res.deaths, native.deaths)
        for k, cloud in enumerate(clouds):
            # against float64 Kruskal where float32 changes nothing; 7-fold duplicates: native suffices
            if (exact or dtype == torch.float64) and kind != "duplicates":
                assert [tuple(e) for e in res.edges[k].tolist()] == canonical_tree(cloud, SCIPY[metric])


def test_distance_matrices_on_neighbour_lists(rng, lists):
    x = rng.integers(0, 4, size=(2, 120, 3)).astype(float)
    dist = torch.from_numpy(np.stack([cdist(c, c) for c in x]))
    res = h0_persistence_from_distances(dist, backend="torch")
    assert torch.equal(res.edges, h0_persistence_from_distances(dist, backend="native").edges)


def _count_rows(monkeypatch, method: str) -> list[int]:
    """The number of rows each call of the _Rows ``method`` (scan, _nearest_in_fixed_order) got."""
    counted, original = [], getattr(boruvka._Rows, method)

    def counting(self, flat, *args):
        counted.append(len(flat))
        return original(self, flat, *args)

    monkeypatch.setattr(boruvka._Rows, method, counting)
    return counted


def test_screening_saves_the_exact_rows_where_it_can(rng, monkeypatch):
    """Spread clouds never need an exact row; two clusters at +-100 with 1e-3 spacing (where the
    expansion cannot resolve a neighbour) fall back to exact rows and still give the exact tree."""
    monkeypatch.setattr(boruvka, "LIST_MIN_POINTS", 0)
    counted = _count_rows(monkeypatch, "_nearest_in_fixed_order")
    spread = torch.from_numpy(rng.normal(size=(2, 400, 64))).float()
    res = h0_persistence(spread, "l2", backend="torch")
    assert torch.equal(res.edges, h0_persistence(spread, "l2", backend="native").edges)
    assert counted == []
    clustered = torch.from_numpy(np.concatenate([rng.normal(size=(80, 160)) * 1e-3 + 100,
                                                 rng.normal(size=(80, 160)) * 1e-3 - 100])).float()
    res = h0_persistence(clustered, "l2", backend="torch")
    assert sum(counted) > 0
    stored = clustered.double().numpy()  # float32 near ties may pick another tree of the same lengths
    tree = canonical_tree(stored, SCIPY["l2"])
    np.testing.assert_allclose(res.deaths.double().numpy(), cdist(stored, stored)[tuple(zip(*tree))], rtol=1e-5)


def test_rows_are_rescanned_rarely(rng, monkeypatch):
    """The point of the lists: after the first scan, few rows are scanned again."""
    monkeypatch.setattr(boruvka, "LIST_MIN_POINTS", 0)
    scanned = _count_rows(monkeypatch, "scan")
    for metric in ("l1", "l2"):
        scanned.clear()
        h0_persistence(torch.from_numpy(rng.normal(size=(1, 2000, 64))).float(), metric, backend="torch")
        assert scanned[0] == 2000 and sum(scanned[1:]) <= 200


def _tf32(x: torch.Tensor) -> torch.Tensor:
    """float32 rounded to TF32's 10 mantissa bits (to nearest, ties away)."""
    return ((x.view(torch.int32) + 0x1000) & ~0x1FFF).view(torch.float32)


@pytest.mark.parametrize("setting, rounding, inputs", [("bf16", 2.0 ** -8, lambda x: x.bfloat16().float()),
                                                       ("tf32", 2.0 ** -11, _tf32), ("ieee", 2.0 ** -24, None)])
def test_screening_under_reduced_matmul_precision(rng, lists, setting, rounding, inputs):
    """The screening's error bound follows torch's float32 matmul precision: with the matmul's
    inputs rounded as that setting allows (emulated here, whatever this CPU does), the tree is
    still the exact one (with the float32 bound under bfloat16 inputs it is not: checked by hand)."""
    if inputs is not None:
        matmul = torch.matmul
        lists.setattr(torch, "matmul", lambda a, b: matmul(inputs(a), inputs(b)))
    previous = torch.backends.mkldnn.matmul.fp32_precision
    torch.backends.mkldnn.matmul.fp32_precision = setting
    try:
        x = torch.from_numpy(np.concatenate([rng.integers(-3, 4, size=(150, 64)),
                                             rng.integers(-3, 4, size=(150, 64)) / 128 + 3]).astype(np.float32))
        assert boruvka._input_rounding(x) == rounding and boruvka._input_rounding(x.double()) == 2.0 ** -53
        assert torch.equal(h0_persistence(x, "l2", backend="torch").edges, h0_persistence(x, "l2", backend="native").edges)
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = previous


def test_fixed_rounds_in_float64_and_float32_agree_with_lists(rng, monkeypatch):
    """The two schedules choose the same tree (integer clouds: no rounding anywhere)."""
    x = torch.from_numpy(rng.integers(0, 4, size=(2, 300, 3)).astype(np.float32))
    for dtype in (torch.float32, torch.float64):
        fixed = h0_persistence(x.to(dtype), "l1", backend="torch")
        monkeypatch.setattr(boruvka, "LIST_MIN_POINTS", 0)
        listed = h0_persistence(x.to(dtype), "l1", backend="torch")
        monkeypatch.undo()
        assert torch.equal(fixed.edges, listed.edges) and torch.equal(fixed.deaths, listed.deaths)
