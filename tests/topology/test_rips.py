"""Vietoris-Rips persistence in dimension >= 1 against gudhi, gradients, thresholds, the torchph API."""

import math
import sys

import gudhi
import numpy as np
import pytest
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import cdist

import corel.pershom as pershom
from corel.topology.distances import edge_lengths
from conftest import METRICS
from corel import (
    H0,
    Diagram,
    h0_persistence,
    persistence_pairs,
    rips_persistence,
    rips_persistence_from_distances,
)



def gudhi_diagrams(dist: np.ndarray, max_dimension: int, threshold: float = math.inf):
    """(finite pairs sorted by (death, birth), sorted essential births) per dimension, by gudhi."""
    rips = gudhi.RipsComplex(distance_matrix=dist, max_edge_length=threshold)
    tree = rips.create_simplex_tree(max_dimension=max_dimension + 1)
    pairs = tree.persistence(homology_coeff_field=2, min_persistence=0)
    out = []
    for k in range(max_dimension + 1):
        finite = sorted(((b, d) for dim, (b, d) in pairs if dim == k and math.isfinite(d)), key=lambda t: (t[1], t[0]))
        essential = sorted(b for dim, (b, d) in pairs if dim == k and not math.isfinite(d))
        out.append((np.array(finite).reshape(-1, 2), np.array(essential)))
    return out


def assert_equal_to_gudhi(diagrams, expected):
    assert len(diagrams) == len(expected)
    for k, (diagram, (finite, essential)) in enumerate(zip(diagrams, expected)):
        assert diagram.dimension == k
        np.testing.assert_allclose(diagram.pairs.detach().numpy(), finite, atol=1e-12)
        np.testing.assert_allclose(diagram.essential.detach().numpy(), essential, atol=1e-12)


def noisy_circle(rng, n=16, noise=0.05):
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 0.1, n)
    return np.stack([np.cos(angles), np.sin(angles)], 1) + noise * rng.normal(size=(n, 2))


@pytest.mark.parametrize("metric, scipy_metric", METRICS)
@pytest.mark.parametrize("n, d, max_dimension", [(40, 2, 1), (60, 5, 1), (25, 3, 2)])
def test_diagrams_equal_gudhi(rng, metric, scipy_metric, n, d, max_dimension):
    x = rng.normal(size=(n, d))
    diagrams = rips_persistence(torch.from_numpy(x), metric, max_dimension)
    assert_equal_to_gudhi(diagrams, gudhi_diagrams(cdist(x, x, **scipy_metric), max_dimension))
    assert len(diagrams[1].pairs) > 0  # the test compares something in dimension 1
    dist = torch.from_numpy(cdist(x, x, **scipy_metric))
    for diagram in diagrams:  # each value is the distance at its edge
        torch.testing.assert_close(diagram.pairs[:, 1], dist[diagram.death_edges[:, 0], diagram.death_edges[:, 1]])
        torch.testing.assert_close(diagram.pairs[:, 0], dist[diagram.birth_edges[:, 0], diagram.birth_edges[:, 1]])


@pytest.mark.parametrize("threshold", [0.3, 0.6, 1.2])
def test_threshold_and_essential_classes_equal_gudhi(rng, threshold):
    x = np.concatenate([noisy_circle(rng), 0.3 * rng.normal(size=(6, 2)) + 3])  # a loop and a far cluster
    dist = cdist(x, x)
    diagrams = rips_persistence(torch.from_numpy(x), "l2", 2, threshold=threshold)
    assert_equal_to_gudhi(diagrams, gudhi_diagrams(dist, 2, threshold))
    from_matrix = rips_persistence_from_distances(torch.from_numpy(dist), 2, threshold=threshold)
    for a, b in zip(diagrams, from_matrix):
        torch.testing.assert_close(a.pairs, b.pairs)
        torch.testing.assert_close(a.essential, b.essential)
    for diagram in diagrams[1:]:
        torch.testing.assert_close(diagram.essential,
                                   torch.from_numpy(dist[tuple(diagram.essential_edges.T.numpy())]))
    if threshold == 1.2:  # the loop is born below the threshold and does not die before it
        assert diagrams[1].essential.shape == (1,)


@pytest.mark.parametrize("threshold", [math.inf, 1.0])
def test_nonzero_diagonal_is_ignored_in_every_dimension(rng, threshold):
    # giotto-ph reads a nonzero diagonal as vertex births: it had paired a class with a death edge
    # shorter than its birth (seed 1, trial 12 of this loop, death 0.74 < birth 0.84)
    for _ in range(20):
        x = rng.normal(size=(12, 2))
        dist = cdist(x, x)
        with_diagonal = dist + np.diag(rng.uniform(0, 3, 12))
        diagrams = rips_persistence_from_distances(torch.from_numpy(with_diagonal), 2, threshold=threshold)
        assert_equal_to_gudhi(diagrams, gudhi_diagrams(dist, 2, threshold))


@pytest.mark.parametrize("metric", ["l1", "l2", 3.0])
def test_every_dimension_applies_one_threshold(metric):
    """A square of float32 side 0.1f (0.1000000015 exactly) at threshold 0.1: dimension 0 compared
    in float32 (sides in: one component) and the engine in float64 (sides out: no loop), which
    reported one component and no loop, impossible for a 4-cycle.  Now each threshold is compared
    exactly on the values corel reports; torchph's API rounds it to the points' dtype first, as
    torchph does, and then also applies it to every dimension alike."""
    square = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.1, 0.1], [0.0, 0.1]])
    side = float(edge_lengths(square, torch.tensor([[0, 1]]), metric))
    for threshold, components, loops in ((0.1, 4, 0), (side, 1, 1)):
        h0, h1 = rips_persistence(square, metric, 1, threshold=threshold)
        assert (len(h0.essential), len(h1.essential)) == (components, loops)
    if metric == "l1":
        _, essential = pershom.vr_persistence_l1(square, 1, 0.1)  # 0.1 rounds to 0.1f: the sides are in
        assert len(essential[0]) == 1 and essential[1].tolist() == [side]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("metric", ["l1", "l2", "linf", 3.0])
def test_the_engine_sees_the_lengths_corel_reports(rng, monkeypatch, dtype, metric):
    """The matrix giotto-ph pairs on (and the threshold decides on) is edge_lengths bit for bit,
    computed in row tiles of the scaled cloud (through edge_lengths it took 5-12 s and 1.6-3.7 GB
    at n = 2,000, d = 160, where torch.cdist took 0.22 s)."""
    from corel.topology import distances

    monkeypatch.setattr(distances, "PAIRWISE_TILE_ELEMENTS", 7 * 40 * 40)  # tiles of a few rows (d padded to 40)
    x = torch.from_numpy(rng.normal(size=(40, 37)) * 10.0 ** rng.integers(-3, 3, size=(40, 1))).to(dtype)
    i, j = torch.meshgrid(torch.arange(40), torch.arange(40), indexing="ij")
    want = edge_lengths(x, torch.stack([i, j], dim=-1).reshape(-1, 2), metric).view(40, 40)
    assert torch.equal(distances.all_lengths(x, metric), want)


def test_without_threshold_only_one_essential_class(rng):
    diagrams = rips_persistence(torch.from_numpy(rng.normal(size=(30, 3))), "l1", 2)
    assert [d.essential.shape[0] for d in diagrams] == [1, 0, 0]


def test_h0_diagram_equals_h0_persistence_and_elder_rule(rng):
    x = rng.normal(size=(50, 2))
    for threshold in [math.inf, 0.3]:
        diagram = rips_persistence(torch.from_numpy(x), "l2", 0, threshold=threshold)[0]
        h0 = h0_persistence(torch.from_numpy(x), "l2")
        keep = h0.deaths <= threshold
        torch.testing.assert_close(diagram.pairs[:, 1], h0.deaths[keep])
        assert (diagram.pairs[:, 0] == 0).all()
        # essential vertices: the smallest index of each component of the thresholded graph
        edges = h0.edges[keep].numpy()
        graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(50, 50))
        count, labels = connected_components(graph, directed=False)
        assert diagram.essential.shape == (count,)
        assert diagram.essential_edges[:, 0].tolist() == [int(np.flatnonzero(labels == c)[0]) for c in range(count)]
        # every vertex but the essential ones starts exactly one dying component
        born = diagram.birth_edges[:, 0].tolist() + diagram.essential_edges[:, 0].tolist()
        assert sorted(born) == list(range(50))


@pytest.mark.parametrize("metric", ["l1", "l2", "linf"])
def test_gradcheck_points(rng, metric):
    x = torch.from_numpy(noisy_circle(rng, n=10, noise=0.1)).requires_grad_()

    def values(points):
        full = rips_persistence(points, metric, 1)
        cut = rips_persistence(points, metric, 1, threshold=1.5)  # the loop stays open: essential
        return torch.cat([full[1].pairs.reshape(-1), cut[1].essential, full[0].pairs[:, 1]])

    assert len(values(x)) >= 9 + 3  # a finite and an essential class of dimension 1
    assert torch.autograd.gradcheck(values, (x,))


def test_gradcheck_distance_matrix(rng):
    n = 9
    iu = torch.triu_indices(n, n, 1)
    w = torch.from_numpy(rng.uniform(1, 2, size=iu.shape[1])).requires_grad_()

    def values(upper):
        dist = torch.zeros(n, n, dtype=upper.dtype).index_put((iu[0], iu[1]), upper)
        diagrams = rips_persistence_from_distances(dist + dist.T, 2)
        return torch.cat([diagrams[1].pairs.reshape(-1), diagrams[2].pairs.reshape(-1)])

    assert len(values(w)) > 0
    assert torch.autograd.gradcheck(values, (w,))


def test_batched_equals_per_cloud(rng):
    x = torch.from_numpy(rng.normal(size=(2, 3, 20, 2)))
    batched = rips_persistence(x, "l1", 1)
    assert len(batched) == 2 and all(len(row) == 3 for row in batched)
    for i in range(2):
        for j in range(3):
            for a, b in zip(batched[i][j], rips_persistence(x[i, j], "l1", 1)):
                assert torch.equal(a.pairs, b.pairs) and torch.equal(a.death_edges, b.death_edges)


def test_float32_close_to_float64(rng):
    x = rng.normal(size=(40, 3))
    a = rips_persistence(torch.from_numpy(x), "l2", 1)[1].pairs
    b = rips_persistence(torch.from_numpy(x).float(), "l2", 1)[1].pairs
    assert b.dtype == torch.float32
    np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5)


@pytest.mark.parametrize("metric", ["l1", "l2", 3.0])
@pytest.mark.parametrize("dtype, exponent", [(torch.float32, 66), (torch.float32, -84), (torch.float64, 500),
                                             (torch.float64, -540)])
def test_huge_and_tiny_coordinates_scale_exactly(rng, metric, dtype, exponent):
    """The diagrams of 2**k x are those of x times 2**k, bit for bit, with their gradients those of
    x: near the ends of the dtype's range the lengths of dimension >= 1 came out inf (squares
    overflowing at 1e20 in float32), 0 or a few 1e-4 off (underflowing at 1e-25 and 1e-21)."""
    x = torch.from_numpy(rng.normal(size=(25, 3))).to(dtype)

    def diagrams_and_gradient(points):
        leaf = points.clone().requires_grad_()
        diagrams = rips_persistence(leaf, metric, max_dimension=1)
        sum(d.pairs.sum() for d in diagrams if len(d.pairs)).backward()
        return [d.pairs.detach() for d in diagrams], leaf.grad

    pairs, gradient = diagrams_and_gradient(x)
    scaled_pairs, scaled_gradient = diagrams_and_gradient(torch.ldexp(x, torch.tensor(exponent)))
    assert len(pairs[1]) > 0
    for want, got in zip(pairs, scaled_pairs):
        assert torch.equal(got, torch.ldexp(want, torch.tensor(exponent)))
    assert torch.equal(scaled_gradient, gradient)


def test_engine_is_optional_and_named_in_the_error(rng, monkeypatch):
    monkeypatch.setitem(sys.modules, "gph", None)  # as if giotto-ph were not installed
    x = torch.from_numpy(rng.normal(size=(10, 2)))
    assert len(rips_persistence(x, "l1", 0)) == 1  # dimension 0 never needs it
    pershom.vr_persistence_l1(x, 0)
    with pytest.raises(ImportError, match=r"corel\[higher\]"):
        rips_persistence(x, "l1", 1)
    with pytest.raises(ImportError, match=r"corel\[higher\]"):
        pershom.vr_persistence_l1(x, 1)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_dimension": -1}, "max_dimension"), ({"max_dimension": 1.0}, "max_dimension"),
    ({"max_dimension": True}, "max_dimension"), ({"threshold": -1.0}, "threshold"),
    ({"threshold": float("nan")}, "threshold"), ({"metric": "l7"}, "metric"),
])
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rips_persistence(torch.randn(5, 2), **kwargs)


def test_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        rips_persistence(torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), "l1", 1)
    with pytest.raises(ValueError, match="shape"):
        rips_persistence(torch.zeros(5), "l1", 1)
    with pytest.raises(ValueError, match="symmetric"):
        rips_persistence_from_distances(torch.tensor([[0.0, 1.0], [2.0, 0.0]]), 1)


def test_tiny_clouds():
    for n in [1, 2, 3]:
        diagrams = rips_persistence(torch.arange(n, dtype=torch.float64)[:, None], "l1", 2)
        assert [len(d.pairs) for d in diagrams] == [n - 1, 0, 0]
        assert [len(d.essential) for d in diagrams] == [1, 0, 0]


def test_torchph_api_all_dimensions(rng):
    x = torch.from_numpy(noisy_circle(rng))
    dist = torch.cdist(x, x)
    for threshold in [0.0, 1.2]:
        non_ess, ess = pershom.vr_persistence_l2(x, 2, threshold)
        expected = gudhi_diagrams(dist.numpy(), 2, threshold or math.inf)
        assert len(non_ess) == len(ess) == 3
        for k in range(3):
            np.testing.assert_allclose(non_ess[k].numpy(), expected[k][0].reshape(-1, 2), atol=1e-12)
            assert ess[k].shape == (len(expected[k][1]),)
            np.testing.assert_allclose(ess[k].numpy(), expected[k][1], atol=1e-12)
        non_ess_d, ess_d = pershom.vr_persistence(dist, 2, threshold)
        for a, b in zip(non_ess + ess, non_ess_d + ess_d):
            torch.testing.assert_close(a, b)
    # true Vietoris-Rips semantics: at max_dimension=1 the loop is a finite bar (torchph: essential)
    non_ess, ess = pershom.vr_persistence_l1(x, 1)
    assert len(non_ess[1]) >= 1 and ess[1].shape == (0,)


def test_persistence_pairs_accepts_every_result(rng):
    x = torch.from_numpy(rng.normal(size=(20, 2)))
    diagrams = rips_persistence(x, "l1", 1)
    torchph = pershom.vr_persistence_l1(x, 1)
    h0 = h0_persistence(x, "l1")
    for result in [diagrams, torchph]:
        pairs = persistence_pairs(result)
        assert len(pairs) == 2
        torch.testing.assert_close(pairs[1][0], diagrams[1].pairs)
    torch.testing.assert_close(persistence_pairs(h0)[0][0], diagrams[0].pairs)
    single = persistence_pairs(diagrams[1])  # placed at its own dimension
    assert single[0][0].shape == (0, 2) and torch.equal(single[1][0], diagrams[1].pairs)
    for bad in [x, [], (1, 2), H0(h0.deaths[None], h0.edges[None])]:
        with pytest.raises(ValueError):
            persistence_pairs(bad)
    assert isinstance(diagrams[0], Diagram)


@pytest.mark.parametrize("metric", ["l2", None])
def test_torch_func_grad_and_jacrev_equal_autograd(rng, metric):
    # the engine reads the lengths on the host, which a tensor wrapped by torch.func had refused
    x = torch.from_numpy(noisy_circle(rng))
    data = x if metric else torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")

    def loss(data: torch.Tensor) -> torch.Tensor:
        diagrams = rips_persistence(data, metric, 2) if metric else rips_persistence_from_distances(data, 2)
        return (diagrams[1].pairs[:, 1] - diagrams[1].pairs[:, 0]).pow(2).sum()

    leaf = data.clone().requires_grad_()
    expected, = torch.autograd.grad(loss(leaf), leaf)
    assert expected.abs().sum() > 0
    torch.testing.assert_close(torch.func.grad(loss)(data), expected, rtol=0, atol=0)
    torch.testing.assert_close(torch.func.jacrev(loss)(data), expected, rtol=0, atol=0)


def test_threshold_may_be_a_0d_tensor(rng):
    # as max_ball_diameter may: a threshold computed as a quantile of the distances had been refused
    x = torch.from_numpy(noisy_circle(rng))
    threshold = torch.cdist(x, x).quantile(0.3)
    for a, b in zip(rips_persistence(x, "l2", 1, threshold=threshold),
                    rips_persistence(x, "l2", 1, threshold=float(threshold))):
        assert torch.equal(a.pairs, b.pairs) and torch.equal(a.essential, b.essential)
    with pytest.raises(ValueError, match="threshold"):
        rips_persistence(x, "l2", 1, threshold=torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize("metric", ["l1", "l2", "linf", 3.0])
def test_vectorized_jacobian_and_hessian_equal_the_looped_ones(rng, metric):
    # vectorize=True batches the backward with torch's legacy vmap, which had no rule for flatten
    x = torch.from_numpy(noisy_circle(rng, n=10))

    def values(x: torch.Tensor) -> torch.Tensor:
        diagrams = rips_persistence(x, metric, 1)
        return torch.cat([diagrams[0].pairs[:, 1], diagrams[1].pairs.reshape(-1)])

    def loss(x: torch.Tensor) -> torch.Tensor:
        return values(x).pow(2).sum()

    jacobian = torch.autograd.functional.jacobian
    hessian = torch.autograd.functional.hessian
    torch.testing.assert_close(jacobian(values, x, vectorize=True), jacobian(values, x), rtol=0, atol=0)
    torch.testing.assert_close(hessian(loss, x, vectorize=True), hessian(loss, x))


def test_higher_dimensions_refuse_vmap(rng):
    # unwrapping a batched tensor would hand the engine the whole batch as one matrix
    from corel.topology.rips import higher_diagrams

    x = rng.normal(size=(3, 8, 2))
    dist = torch.from_numpy(np.stack([cdist(c, c) for c in x]))
    with pytest.raises(ValueError, match="vmap"):
        torch.vmap(lambda d: higher_diagrams(d, None, 1, math.inf)[0].pairs.sum())(dist)
    with pytest.raises(ValueError, match="vmap"):
        torch.vmap(torch.func.grad(lambda d: higher_diagrams(d, None, 1, math.inf)[0].pairs.sum()))(dist)
