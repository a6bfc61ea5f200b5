"""Dimension-0 persistence against independent oracles, gradients, batching, devices, bad input."""

import math

import gudhi
import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial.distance import cdist

import corel.pershom as pershom
from conftest import METRICS
from corel import h0_persistence, h0_persistence_from_distances, rips_persistence



def scipy_deaths(x: np.ndarray, scipy_metric: dict) -> np.ndarray:
    # scipy's csgraph drops zero entries as missing edges: only for clouds without duplicates
    return np.sort(minimum_spanning_tree(cdist(x, x, **scipy_metric)).data)


def gudhi_deaths(dist: np.ndarray) -> np.ndarray:
    tree = gudhi.RipsComplex(distance_matrix=dist).create_simplex_tree(max_dimension=1)
    pairs = tree.persistence(min_persistence=-1)  # -1 keeps zero-length bars
    return np.sort([d for dim, (b, d) in pairs if dim == 0 and math.isfinite(d)])


def is_spanning_tree(edges: np.ndarray, n: int) -> bool:
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j in edges:
        ri, rj = find(int(i)), find(int(j))
        if ri == rj:
            return False
        parent[ri] = rj
    return len(edges) == n - 1


@pytest.mark.parametrize("metric, scipy_metric", METRICS)
@pytest.mark.parametrize("n, d", [(2, 1), (3, 2), (17, 3), (200, 10), (1500, 4), (300, 160)])
def test_deaths_equal_scipy_mst(rng, metric, scipy_metric, n, d):
    x = rng.normal(size=(n, d))
    res = h0_persistence(torch.from_numpy(x), metric)
    np.testing.assert_allclose(res.deaths.numpy(), scipy_deaths(x, scipy_metric), rtol=1e-12, atol=1e-12)
    assert is_spanning_tree(res.edges.numpy(), n)
    assert (res.edges[:, 0] < res.edges[:, 1]).all()
    np.testing.assert_allclose(cdist(x, x, **scipy_metric)[res.edges[:, 0], res.edges[:, 1]], res.deaths.numpy())


@pytest.mark.parametrize("metric, scipy_metric", METRICS)
def test_float32_close_to_float64_oracle(rng, metric, scipy_metric):
    x = rng.normal(size=(400, 16)).astype(np.float32)
    res = h0_persistence(torch.from_numpy(x), metric)
    assert res.deaths.dtype == torch.float32
    np.testing.assert_allclose(res.deaths.numpy(), scipy_deaths(x.astype(np.float64), scipy_metric), rtol=1e-5)


@pytest.mark.parametrize("metric, scipy_metric", METRICS)
def test_duplicates_and_ties_equal_gudhi(rng, metric, scipy_metric):
    grid = np.stack(np.meshgrid(np.arange(5), np.arange(4), np.arange(3)), -1).reshape(-1, 3).astype(float)
    x = np.concatenate([grid, grid[:7], rng.integers(0, 3, size=(10, 3))])  # exact ties and duplicates
    dist = cdist(x, x, **scipy_metric)
    res = h0_persistence(torch.from_numpy(x), metric)
    expected = gudhi_deaths(dist)
    np.testing.assert_allclose(res.deaths.numpy(), expected, atol=1e-12)
    assert (res.deaths == 0).sum() >= 17  # every duplicate gives a zero death time
    assert is_spanning_tree(res.edges.numpy(), len(x))
    again = h0_persistence(torch.from_numpy(x.copy()), metric)
    assert torch.equal(res.edges, again.edges)  # deterministic under ties


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_l2_high_dimension_matmul_selection_is_exact(rng, dtype):
    # l2 at d >= 64 selects edges on a BLAS distance matrix; lengths must still be exact
    x = rng.normal(size=(300, 100)) * 50 + 1000
    x = np.concatenate([x, x[:5]])  # duplicates far from the origin: the matmul pitfall
    res = h0_persistence(torch.from_numpy(x).to(dtype), "l2")
    assert (res.deaths[:5] == 0).all()
    np.testing.assert_allclose(res.deaths.double().numpy(), gudhi_deaths(cdist(x, x)),
                               rtol=1e-5 if dtype == torch.float32 else 1e-10)


def test_from_distance_matrix_equals_points(rng):
    x = torch.from_numpy(rng.normal(size=(50, 4)))
    dist = torch.cdist(x, x, p=1)
    a, b = h0_persistence(x, "l1"), h0_persistence_from_distances(dist)
    torch.testing.assert_close(a.deaths, b.deaths)
    assert torch.equal(a.edges, b.edges)


@pytest.mark.parametrize("metric", ["l1", "l2", "linf", 3.0])
def test_gradcheck(rng, metric):
    x = torch.from_numpy(rng.normal(size=(9, 3))).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: h0_persistence(p, metric).deaths, (x,))


def test_gradcheck_distance_matrix(rng):
    n = 8
    iu = torch.triu_indices(n, n, 1)
    w = torch.from_numpy(rng.uniform(1, 2, size=iu.shape[1])).requires_grad_()

    def deaths(upper):
        dist = torch.zeros(n, n, dtype=upper.dtype).index_put((iu[0], iu[1]), upper)
        return h0_persistence_from_distances(dist + dist.T).deaths

    assert torch.autograd.gradcheck(deaths, (w,))


def test_duplicate_points_have_finite_zero_gradient():
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 2.0]], requires_grad=True)
    for metric in ["l1", "l2", "linf"]:
        x.grad = None
        h0_persistence(x, metric).deaths.sum().backward()
        assert torch.isfinite(x.grad).all()


def test_batched_equals_per_cloud(rng):
    x = torch.from_numpy(rng.normal(size=(2, 3, 40, 5)))
    res = h0_persistence(x, "l1")
    assert res.deaths.shape == (2, 3, 39) and res.edges.shape == (2, 3, 39, 2)
    for i in range(2):
        for j in range(3):
            one = h0_persistence(x[i, j], "l1")
            assert torch.equal(res.deaths[i, j], one.deaths)
            assert torch.equal(res.edges[i, j], one.edges)


@pytest.mark.parametrize("metric", ["l1", "l2", "linf", 1.5])
def test_torch_backend_equals_native(rng, metric):
    grid = torch.tensor(np.stack(np.meshgrid(np.arange(4), np.arange(4)), -1).reshape(-1, 2), dtype=torch.float64)
    for x in [torch.from_numpy(rng.normal(size=(3, 60, 6))), torch.cat([grid, grid[:3]])]:
        native = h0_persistence(x, metric, backend="native")
        fallback = h0_persistence(x, metric, backend="torch")
        torch.testing.assert_close(native.deaths, fallback.deaths)
        assert torch.equal(native.edges, fallback.edges)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("metric", ["l1", "l2", "linf"])
def test_cuda_agrees_with_cpu(rng, metric):
    x = torch.from_numpy(rng.normal(size=(4, 100, 10))).float()
    cpu = h0_persistence(x, metric)
    gpu = h0_persistence(x.cuda().requires_grad_(), metric)
    assert gpu.deaths.device.type == "cuda" and gpu.edges.device.type == "cuda"
    torch.testing.assert_close(gpu.deaths.cpu(), cpu.deaths)
    assert torch.equal(gpu.edges.cpu(), cpu.edges)
    gpu.deaths.sum().backward()


def test_single_point_gives_empty_result():
    res = h0_persistence(torch.zeros(3, 1, 4))
    assert res.deaths.shape == (3, 0) and res.edges.shape == (3, 0, 2)


@pytest.mark.parametrize("bad, message", [
    (torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), "NaN"),
    (torch.tensor([[0.0, float("inf")], [1.0, 1.0]]), "inf"),
    (torch.zeros(5), "shape"),
    (torch.zeros(5, 2, dtype=torch.long), "floating"),
    (torch.zeros(0, 3), "n = 0"),
    (torch.zeros(4, 0), "d = 0"),
])
def test_bad_input_raises(bad, message):
    with pytest.raises(ValueError, match=message):
        h0_persistence(bad)


@pytest.mark.parametrize("fn", [h0_persistence, h0_persistence_from_distances, lambda x: pershom.vr_persistence_l1(x, 0),
                                lambda x: pershom.vr_persistence(x, 0), lambda x: rips_persistence(x, max_dimension=0)])
def test_arrays_and_lists_are_refused_with_a_hint(fn):
    for bad in (np.zeros((3, 3)), [[0.0, 1.0], [1.0, 0.0]]):
        with pytest.raises(ValueError, match="torch.Tensor"):
            fn(bad)


def test_bad_metric_raises():
    for metric in ["l3", 0.5, float("nan"), None]:
        with pytest.raises(ValueError, match="metric"):
            h0_persistence(torch.zeros(3, 2), metric)


def test_torchph_distance_matrix_reads_the_lower_triangle():
    """torchph ignores the part above the diagonal, so an asymmetric matrix is accepted."""
    lower = torch.tensor([[0.0, 9.0, 9.0], [1.0, 0.0, 9.0], [4.0, 2.0, 0.0]], requires_grad=True)
    non_ess, ess = pershom.vr_persistence(lower, 0)
    assert non_ess[0][:, 1].tolist() == [1.0, 2.0] and ess[0].tolist() == [0.0]
    non_ess[0][:, 1].sum().backward()
    assert lower.grad.tolist() == [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]


def test_bad_distance_matrix_raises():
    with pytest.raises(ValueError, match="symmetric"):
        h0_persistence_from_distances(torch.tensor([[0.0, 1.0], [2.0, 0.0]]))
    with pytest.raises(ValueError, match="negative"):
        h0_persistence_from_distances(torch.tensor([[0.0, -1.0], [-1.0, 0.0]]))
    with pytest.raises(ValueError, match="shape"):
        h0_persistence_from_distances(torch.zeros(2, 3))


def test_torchph_seed_snippet():
    batch = torch.randn(10, 5, requires_grad=True)
    non_ess, ess = pershom.vr_persistence_l1(batch, 0, 0)
    example_loss = non_ess[0][:, 1].sum()
    example_loss.backward()
    assert non_ess[0].shape == (9, 2) and (non_ess[0][:, 0] == 0).all()
    assert ess[0].shape == (1,) and ess[0].item() == 0  # 1-D, as torchph
    assert batch.grad is not None and batch.grad.abs().sum() > 0


def test_torchph_api_threshold_and_zero_bars():
    x = torch.tensor([[0.0], [0.0], [1.0], [3.0], [10.0]])
    non_ess, ess = pershom.vr_persistence_l1(x, 0)
    assert non_ess[0][:, 1].tolist() == [0.0, 1.0, 2.0, 7.0] and ess[0].shape == (1,)
    non_ess, ess = pershom.vr_persistence_l1(x, 0, 2.0)  # the 7.0 edge is ignored: 2 infinite classes
    assert non_ess[0][:, 1].tolist() == [0.0, 1.0, 2.0] and ess[0].shape == (2,)
    non_ess, _ = pershom.vr_persistence_l1(x, 0, drop_zero_bars=True)
    assert non_ess[0][:, 1].tolist() == [1.0, 2.0, 7.0]
    non_ess_l2, _ = pershom.vr_persistence_l2(x, 0)
    non_ess_d, _ = pershom.vr_persistence(torch.cdist(x, x), 0)
    assert torch.equal(non_ess_l2[0], non_ess[0].new_tensor([[0, 0], [0, 1], [0, 2], [0, 7.0]]))
    assert torch.equal(non_ess_d[0], non_ess_l2[0])


def test_torchph_api_higher_dimensions():
    # a square of side 1: one loop born at 1 (the sides), dead at sqrt(2) (the diagonals)
    square = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    non_ess, ess = pershom.vr_persistence_l2(square, 1)
    assert len(non_ess) == len(ess) == 2
    assert non_ess[1].tolist() == [[1.0, math.sqrt(2)]] and ess[1].shape == (0,)
    non_ess, ess = pershom.vr_persistence_l2(square, 1, 1.2)  # no diagonals: the loop never dies
    assert non_ess[1].shape == (0, 2) and ess[1].tolist() == [1.0]
    for bad in [-1, 1.5, True]:
        with pytest.raises(ValueError, match="max_dimension"):
            pershom.vr_persistence_l1(torch.randn(5, 2), bad)


def test_large_cloud_without_distance_matrix():
    # 20,000 points: the dense matrix would be 3.2 GB in float64; the kernel needs O(n d)
    x = torch.rand(20000, 3, generator=torch.Generator().manual_seed(1))
    res = h0_persistence(x, "l1")
    assert res.deaths.shape == (19999,) and is_spanning_tree(res.edges.numpy(), 20000)
    # each point's nearest-neighbour distance is a lower bound on the edge that attaches it
    assert (res.deaths[1:] >= res.deaths[:-1]).all()
