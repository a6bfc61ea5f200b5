"""Dimension-0 persistence against independent oracles, gradients, batching, devices, bad input."""

import math

import numpy as np
import pytest
import torch
from torch import Tensor
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial.distance import cdist

import corel.pershom as pershom
from conftest import ENGINES, METRICS, canonical_tree, joiner, kruskal, lp_distances
from corel import ConnectivityLoss, h0_persistence, h0_persistence_from_distances, rips_persistence
from corel.topology.h0 import _engine



def scipy_deaths(x: np.ndarray, scipy_metric: dict) -> np.ndarray:
    # scipy's csgraph drops zero entries as missing edges: only for clouds without duplicates
    return np.sort(minimum_spanning_tree(cdist(x, x, **scipy_metric)).data)


def gudhi_deaths(dist: np.ndarray) -> np.ndarray:
    gudhi = pytest.importorskip("gudhi")  # a test extra; the GPU machine may lack it, the rest of the file runs
    tree = gudhi.RipsComplex(distance_matrix=dist).create_simplex_tree(max_dimension=1)
    pairs = tree.persistence(min_persistence=-1)  # -1 keeps zero-length bars
    return np.sort([d for dim, (b, d) in pairs if dim == 0 and math.isfinite(d)])


def is_spanning_tree(edges: np.ndarray, n: int) -> bool:
    join = joiner(n)
    return all(join(i, j) for i, j in edges) and len(edges) == n - 1


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


def test_from_distance_matrix_equals_points(rng):
    x = torch.from_numpy(rng.normal(size=(50, 4)))
    dist = torch.cdist(x, x, p=1)
    a, b = h0_persistence(x, "l1"), h0_persistence_from_distances(dist)
    torch.testing.assert_close(a.deaths, b.deaths)
    assert torch.equal(a.edges, b.edges)


@pytest.mark.parametrize("metric", ["l1", "l2", "linf", 3.0, 1.5])
def test_gradcheck(rng, metric):
    x = torch.from_numpy(rng.normal(size=(2, 9, 3))).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: h0_persistence(p, metric).deaths, (x,))
    # second derivatives too (gradient penalties): l2's Hessian is not zero
    assert torch.autograd.gradgradcheck(lambda p: h0_persistence(p, metric).deaths, (x,))


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("metric", ["l1", "l2", "linf", 3.0])
@pytest.mark.parametrize("dtype, exponent, weight", [(torch.float32, 123, 1e4), (torch.float32, -100, 1e-9),
                                                     (torch.float64, 1017, 1e4), (torch.float64, -1000, 1e-6)])
def test_gradients_do_not_depend_on_the_scale(rng, backend, metric, dtype, exponent, weight):
    """A death time's gradient is the same at x and at 2**k x (the norm is homogeneous), also near
    the ends of the dtype's range: through the scaling, autograd multiplied the incoming gradient by
    the scale, which overflowed to inf or lost bits to underflow."""
    x = torch.from_numpy(rng.normal(size=(3, 30, 5)) / 8).to(dtype)  # distances stay finite at 2**k x
    weights = torch.from_numpy(rng.choice([-1, 1], size=(3, 29)) * rng.uniform(1, 2, size=(3, 29)) * weight).to(dtype)

    def gradient(points: Tensor) -> Tensor:
        leaf = points.clone().requires_grad_()
        (h0_persistence(leaf, metric, backend=backend).deaths * weights).sum().backward()
        return leaf.grad

    want = gradient(x)
    assert torch.isfinite(want).all()
    assert torch.equal(gradient(torch.ldexp(x, torch.tensor(exponent))), want)


@pytest.mark.parametrize("metric", ["l1", "l2"])
def test_torch_func_transforms_on_the_default_engine(rng, metric):
    """jacrev, vmap and the loss under jacrev on CPU: "auto" chose the compiled kernel, which cannot
    read a transformed tensor ("Cannot access data pointer"), and the checks read values on the
    host (vmap refuses .item()).  Under torch.func "auto" is Borůvka and the checks are left out."""
    x = torch.from_numpy(rng.normal(size=(3, 9, 4)))
    batched = h0_persistence(x, metric).deaths
    assert torch.equal(torch.func.vmap(lambda c: h0_persistence(c, metric).deaths)(x), batched)
    jacobian = torch.func.jacrev(lambda c: h0_persistence(c, metric).deaths)(x[0])
    torch.testing.assert_close(jacobian, torch.autograd.functional.jacobian(
        lambda c: h0_persistence(c, metric).deaths, x[0]), rtol=1e-12, atol=1e-12)
    codes = x.transpose(0, 1).reshape(9, 12)
    torch.testing.assert_close(torch.func.jacrev(ConnectivityLoss(metric=metric, branches=3))(codes),
                               torch.autograd.functional.jacobian(ConnectivityLoss(metric=metric, branches=3), codes))
    with pytest.raises(ValueError, match="backend 'native' cannot run under torch.func"):
        torch.func.vmap(lambda c: h0_persistence(c, metric, backend="native").deaths)(x)


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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("metric", ["l1", "l2", "linf"])
@pytest.mark.parametrize("shape", [(4, 100, 10), (1, 3000, 64)])  # fixed rounds; neighbour lists (l2 screened)
@pytest.mark.parametrize("backend", ["torch", ENGINES[2]])
@pytest.mark.parametrize("clustered", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_agrees_with_cpu(rng, metric, shape, backend, clustered, dtype):
    """The same tree, and the same death times bit for bit (one rounding on every device, float64
    roots corrected on the CPU), on clusters 1e-3 wide at +-100 too, where lengths tie to the last bit."""
    if dtype == torch.float64 and shape[1] > 1000:
        pytest.skip("float64 on the small clouds only: a lent GPU's minutes are few")
    x = rng.normal(size=shape)
    if clustered:
        x = x * 1e-3 + np.where(np.arange(shape[1]) % 2, 100.0, -100.0)[:, None]
    x = torch.from_numpy(x).to(dtype)
    weights = torch.from_numpy(rng.uniform(-10, 10, size=(shape[0], shape[1] - 1))).to(dtype)
    on_cpu, on_gpu = x.clone().requires_grad_(), x.cuda().requires_grad_()
    cpu = h0_persistence(on_cpu, metric)
    gpu = h0_persistence(on_gpu, metric, backend=backend)
    assert gpu.deaths.device.type == "cuda" and gpu.edges.device.type == "cuda"
    assert torch.equal(gpu.edges.cpu(), cpu.edges)
    assert torch.equal(gpu.deaths.detach().cpu(), cpu.deaths)
    (cpu.deaths * weights).sum().backward()
    (gpu.deaths * weights.cuda()).sum().backward()  # a point's edges added in their order on both
    assert torch.equal(on_gpu.grad.cpu(), on_cpu.grad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("d", [1, 2, 3, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", ["torch", ENGINES[2]])
def test_cuda_gradients_at_points_of_many_edges_are_the_cpus(rng, d, dtype, backend):
    """Points of many tree edges (duplicates join the first copy; grid points have up to 2d
    neighbours), weighted over twelve orders of magnitude so that every order of adding them
    rounds differently: the GPU adds them as the CPU does."""
    grid = np.stack(np.meshgrid(*[np.arange(3)] * d), -1).reshape(-1, d) if d <= 3 else rng.normal(size=(60, d))
    x = np.concatenate([grid, np.repeat(grid[:5], 6, axis=0)])
    x = x[rng.permutation(len(x))]
    x = torch.from_numpy(x).to(dtype)
    weights = torch.from_numpy(rng.uniform(-1, 1, len(x) - 1) * np.logspace(-6, 6, len(x) - 1)).to(dtype)
    on_cpu, on_gpu = x.clone().requires_grad_(), x.cuda().requires_grad_()
    (h0_persistence(on_cpu, "l2").deaths * weights).sum().backward()
    (h0_persistence(on_gpu, "l2", backend=backend).deaths * weights.cuda()).sum().backward()
    assert torch.equal(on_gpu.grad.cpu(), on_cpu.grad)


@pytest.mark.parametrize("hip, capability, compiler, interpreted, runs", [
    (None, (9, 0), "/usr/bin/cc", False, True), (None, (8, 0), "/usr/bin/cc", False, True),
    (None, (7, 5), "/usr/bin/cc", False, False), ("6.2", (9, 4), "/usr/bin/cc", False, False),
    (None, (9, 0), None, False, False), (None, (9, 0), "/usr/bin/cc", True, False)])
def test_auto_takes_the_triton_kernels_on_nvidia_gpus_from_compute_capability_8(monkeypatch, hip, capability, compiler,
                                                                                interpreted, runs):
    """Their squares are PTX (not ROCm), their machine code was checked for sm_80 and sm_90, Triton
    builds its launcher with a C compiler, and its interpreter is no GPU engine."""
    pytest.importorskip("triton")
    import corel.topology.fused as fused
    import corel.topology.h0 as h0

    monkeypatch.setattr(h0, "_HAS_TRITON", True)
    monkeypatch.setattr(torch.version, "hip", hip)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: capability)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(h0.shutil, "which", lambda name: compiler)
    monkeypatch.setattr(fused, "INTERPRETED", interpreted)
    h0._triton_runs_on.cache_clear()
    try:
        assert h0._triton_runs_on(torch.device("cuda", 0)) is runs
    finally:
        h0._triton_runs_on.cache_clear()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_auto_is_the_triton_kernels_on_an_nvidia_gpu():
    from corel.topology.h0 import _triton_runs_on

    gpu = torch.zeros(3, 2, device="cuda")
    assert _engine(gpu, "auto") == ("triton" if _triton_runs_on(gpu.device) else "torch")
    assert _engine(torch.zeros(3, 2), "auto") == "native"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("backend", ["torch", ENGINES[2]])
def test_unchecked_loss_never_synchronises_on_cuda(backend):
    """What training runs every step: forward and backward without one wait for the device."""
    loss = ConnectivityLoss(eta=2.0, branches=16, check=False, backend=backend)
    z = torch.randn(100, 160, device="cuda", requires_grad=True)
    loss(z).backward()  # lazy initialisation and the allocator's first blocks
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss(z).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ----------------------------------------------------------------------------- engines, ties, scales


def _clouds(rng) -> dict[str, np.ndarray]:
    grid = np.stack(np.meshgrid(np.arange(5), np.arange(4), np.arange(3)), -1).reshape(-1, 3).astype(float)
    return {
        "random": rng.normal(size=(3, 70, 4)),
        "duplicates": np.repeat(rng.normal(size=(3, 20, 4)), 3, axis=1),
        "integer grid with duplicates": np.concatenate([grid, grid[:9], rng.integers(0, 3, size=(12, 3))])[None],
        "ties": rng.integers(0, 3, size=(2, 60, 2)).astype(float),
        "clustered": np.concatenate([rng.normal(size=(2, 30, 6)) * 1e-3 + 100, rng.normal(size=(2, 30, 6)) * 1e-3 - 100,
                                     rng.normal(size=(2, 10, 6)) * 1e-3], axis=1),
    }


@pytest.mark.parametrize("backend", ENGINES[1:])
@pytest.mark.parametrize("kind", ["random", "duplicates", "integer grid with duplicates", "ties", "clustered"])
@pytest.mark.parametrize("metric, scipy_metric", METRICS)
def test_engines_return_the_canonical_tree(rng, kind, metric, scipy_metric, backend):
    """Every engine, batched and one cloud at a time, gives the native kernel's tree and deaths bit
    for bit, and the native kernel gives the oracle's tree."""
    clouds = _clouds(rng)[kind]
    exact = kind != "random" and kind != "clustered"  # integers: every distance exact in any arithmetic
    # l1, l2 and linf round alike in every engine (fixed-order sums); another p only where exact
    dtypes = [torch.float64, torch.float32] if exact or metric in ("l1", "l2", "linf") else [torch.float64]
    for dtype in dtypes:
        x = torch.from_numpy(clouds).to(dtype)
        native, other = (h0_persistence(x, metric, backend=b) for b in ("native", backend))
        assert torch.equal(native.edges, other.edges) and torch.equal(native.deaths, other.deaths)
        for k in range(len(clouds)):
            if backend == "torch":  # Borůvka handles a batch as one graph; the fused kernel, cloud by cloud
                single = h0_persistence(x[k], metric, backend=backend)
                assert torch.equal(single.edges, native.edges[k]) and torch.equal(single.deaths, native.deaths[k])
            stored = x[k].double().numpy()  # the values the dtype holds
            tree = canonical_tree(stored, scipy_metric)
            dist = cdist(stored, stored, **scipy_metric)
            np.testing.assert_allclose(native.deaths[k].double().numpy(), [dist[e] for e in tree],
                                       rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=1e-12)
            if exact or dtype == torch.float64:
                assert [tuple(e) for e in native.edges[k].tolist()] == tree


def fixed_order_tree(x: Tensor, p: float) -> list[tuple[int, int]]:
    """Oracle: Kruskal over corel's one rounding of the lengths (l1 sums, l2 squared sums, in the
    order of fixed_order_sum), in (length, i, j) order."""
    from corel.topology.distances import fixed_order_sum

    diff = (x[:, None, :] - x[None, :, :]).abs()
    return kruskal(fixed_order_sum(diff if p == 1 else diff * diff).numpy())


@pytest.mark.parametrize("engine", ["native", "torch fixed rounds", "torch neighbour lists", ENGINES[2]])
@pytest.mark.parametrize("p", [1.0, 2.0])
@pytest.mark.parametrize("d", [3, 10, 64, 160])
def test_float32_near_ties_are_broken_alike_by_every_engine(rng, monkeypatch, engine, p, d):
    """Clusters 1e-3 wide at +-100 in float32: lengths tie to the last bit everywhere, and each
    engine must pick the tree of the one rounding every engine shares (sums in one order)."""
    from corel.topology import boruvka

    x = torch.from_numpy(np.concatenate([rng.normal(size=(50, d)) * 1e-3 + 100, rng.normal(size=(50, d)) * 1e-3 - 100,
                                         rng.normal(size=(20, d)) * 1e-3])).float()
    scaled = x / 2.0 ** (torch.frexp(x.abs().max()).exponent - 1)  # what the engines see (exact)
    monkeypatch.setattr(boruvka, "LIST_MIN_POINTS", 0 if engine == "torch neighbour lists" else 1 << 20)
    monkeypatch.setattr(boruvka, "LIST_LENGTH", 4)  # lists that run out: rescans and exact rows
    edges = h0_persistence(x, p, backend=engine.split()[0]).edges
    assert sorted(map(tuple, edges.tolist())) == sorted(fixed_order_tree(scaled, p))


@pytest.mark.parametrize("metric, tree", [("l1", [(0, 1), (0, 3), (1, 2)]), ("l2", [(0, 1), (0, 3), (1, 2)]),
                                          ("linf", [(0, 1), (0, 2), (0, 3)])])
@pytest.mark.parametrize("backend", ENGINES)
def test_ties_follow_the_edge_order(metric, tree, backend):
    square = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    assert [tuple(e) for e in h0_persistence(square, metric, backend=backend).edges.tolist()] == tree
    dist = torch.cdist(square, square, p={"l1": 1.0, "l2": 2.0, "linf": float("inf")}[metric])
    assert [tuple(e) for e in h0_persistence_from_distances(dist, backend=backend).edges.tolist()] == tree


@pytest.mark.parametrize("backend", ["native", "torch"])
def test_clustered_high_dimension_l2_is_exact(rng, backend):
    """Two clusters at +-100 with 1e-3 spacing in d = 160: a matmul-expanded distance matrix picks a
    tree up to 33% too long here; every engine must give the minimal one."""
    x = np.concatenate([rng.normal(size=(40, 160)) * 1e-3 + 100, rng.normal(size=(40, 160)) * 1e-3 - 100])
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        stored = torch.from_numpy(x).to(dtype)
        res = h0_persistence(stored, "l2", backend=backend)
        np.testing.assert_allclose(res.deaths.double().numpy(), scipy_deaths(stored.double().numpy(),
                                                                            {"metric": "euclidean"}), rtol=rtol)
    small = torch.from_numpy(x[::8]).requires_grad_()  # gradients follow the right edges
    assert torch.autograd.gradcheck(lambda p: h0_persistence(p, "l2", backend=backend).deaths, (small,))


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("dtype, scale", [(torch.float32, 1e19), (torch.float32, 1e25), (torch.float32, 1e30),
                                          (torch.float32, 1e-30), (torch.float64, 1e300), (torch.float64, 1e-300)])
@pytest.mark.parametrize("metric, scipy_metric", [("l2", {"metric": "euclidean"}), (3.0, {"metric": "minkowski", "p": 3}),
                                                  ("l1", {"metric": "cityblock"})])
def test_huge_and_tiny_coordinates(rng, backend, dtype, scale, metric, scipy_metric):
    unit = rng.normal(size=(2, 30, 5))
    x = torch.from_numpy(unit * scale).to(dtype)
    res = h0_persistence(x, metric, backend=backend)
    stored = x.double().numpy() / scale  # the values the dtype holds, in units of scale
    for k in range(2):
        np.testing.assert_allclose(res.deaths[k].double().numpy() / scale, scipy_deaths(stored[k], scipy_metric),
                                   rtol=1e-5 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("p", [10.0, 30.0, 600.0, 5000.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_p_neither_underflows_nor_overflows(rng, backend, p, dtype):
    """Sums of raw p-th powers lost short edges to underflow (p = 10 in float32: below 1.6e-4 of
    the cloud's extent; p = 30, points (0,0), (0.01,0.005), (1,0) gave deaths [0, 0.99]) and chose
    wrong trees once 4**p overflowed float64 (p > 512: deaths 140% off).  Every engine compares
    lengths taken relative to each pair's largest difference, at any p."""
    clustered = rng.normal(size=(60, 5)) * 1e-3 + np.where(np.arange(60) % 2, 1.0, 0.0)[:, None]  # 1e-3 wide
    for cloud in (clustered, [[0.0, 0.0], [0.01, 0.005], [1.0, 0.0]]):
        stored = torch.as_tensor(cloud, dtype=dtype)
        res = h0_persistence(stored, p, backend=backend)
        dist = lp_distances(stored.double().numpy(), p)
        tree = kruskal(dist)
        assert [tuple(e) for e in res.edges.tolist()] == tree
        np.testing.assert_allclose(res.deaths.double().numpy(), [dist[e] for e in tree],
                                   rtol=1e-6 if dtype == torch.float32 else 1e-13)


@pytest.mark.parametrize("backend", ENGINES)
def test_distances_beyond_the_dtype_raise(backend):
    x = torch.tensor([[-3e38, 0.0], [3e38, 0.0]])
    with pytest.raises(ValueError, match="distance overflow"):
        h0_persistence(x, "l2", backend=backend)
    assert torch.isfinite(h0_persistence(x.double(), "l2", backend=backend).deaths).all()
    with pytest.raises(ValueError, match="distance overflow.*float16"):
        h0_persistence(torch.tensor([[-40000.0], [40000.0]], dtype=torch.float16), "l1", backend=backend)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ENGINES)
def test_half_precision_is_selected_in_float32(rng, dtype, backend):
    x = torch.from_numpy(rng.normal(size=(4, 50, 10))).to(dtype).requires_grad_()
    res = h0_persistence(x, "l1", backend=backend)
    ref = h0_persistence(x.detach().float(), "l1", backend=backend)
    assert res.deaths.dtype == dtype
    for k in range(4):  # the same tree; rounded to the dtype, more deaths tie, so the order may differ
        assert set(map(tuple, res.edges[k].tolist())) == set(map(tuple, ref.edges[k].tolist()))
    assert torch.equal(res.deaths, ref.deaths.to(dtype).sort(dim=-1).values)
    res.deaths.sum().backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad).all()


def _top_level_ops(x: Tensor) -> int:
    from torch.profiler import ProfilerActivity, profile

    h0_persistence(x, backend="torch")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        h0_persistence(x, backend="torch")
    return sum(1 for e in prof.events()
               if e.name.startswith("aten::") and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")))


def test_torch_engine_issues_few_operations():
    """The device-independent proxy for launch-bound GPUs: a fixed number of rounds, logarithmic in n."""
    loss_sized = _top_level_ops(torch.randn(16, 100, 10))
    assert loss_sized <= 250
    assert _top_level_ops(torch.randn(1, 2000, 10)) <= 3 * _top_level_ops(torch.randn(1, 100, 10))


@pytest.mark.parametrize("backend", ENGINES)
def test_single_points_and_empty_batches_give_empty_results(backend):
    points = torch.zeros(3, 1, 4, requires_grad=True)
    res = h0_persistence(points, backend=backend)
    assert res.deaths.shape == (3, 0) and res.edges.shape == (3, 0, 2)
    res.deaths.sum().backward()  # a loss over no bars: zero gradients, not an error
    assert torch.equal(points.grad, torch.zeros_like(points))
    for batch in ((0,), (2, 0)):
        res = h0_persistence(torch.zeros(*batch, 5, 3), backend=backend)
        assert res.deaths.shape == (*batch, 4) and res.edges.shape == (*batch, 4, 2)
        res = h0_persistence_from_distances(torch.zeros(*batch, 5, 5), backend=backend)
        assert res.deaths.shape == (*batch, 4) and res.edges.shape == (*batch, 4, 2)


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


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_negative_zero_distances_tie_with_zero(dtype, backend):
    dist = torch.zeros(3, 3, dtype=dtype)  # three duplicates: (0, 1) and (0, 2) come first among equals
    signed = dist.clone()
    signed[1, 2] = signed[2, 1] = -0.0  # equal to 0.0, so it must not jump the queue
    assert h0_persistence_from_distances(signed, backend=backend).edges.tolist() == [[0, 1], [0, 2]]


def test_bad_distance_matrix_raises():
    with pytest.raises(ValueError, match=r"not symmetric \(entries differ by up to 1; .*\(D \+ D.mT\) / 2"):
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
    """Zero-length bars (the duplicate) are dropped as torchph drops them (its births.ne(deaths)
    filter); drop_zero_bars=False keeps them, as corel's own API does."""
    x = torch.tensor([[0.0], [0.0], [1.0], [3.0], [10.0]])
    non_ess, ess = pershom.vr_persistence_l1(x, 0)
    assert non_ess[0][:, 1].tolist() == [1.0, 2.0, 7.0] and ess[0].shape == (1,)
    non_ess, ess = pershom.vr_persistence_l1(x, 0, 2.0)  # the 7.0 edge is ignored: 2 infinite classes
    assert non_ess[0][:, 1].tolist() == [1.0, 2.0] and ess[0].shape == (2,)
    non_ess, _ = pershom.vr_persistence_l1(x, 0, drop_zero_bars=False)
    assert non_ess[0][:, 1].tolist() == [0.0, 1.0, 2.0, 7.0]
    non_ess_l2, _ = pershom.vr_persistence_l2(x, 0, drop_zero_bars=False)
    non_ess_d, _ = pershom.vr_persistence(torch.cdist(x, x), 0, drop_zero_bars=False)
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


def test_fixed_rounds_trace_into_one_graph(rng):
    """Under torch.compile (fullgraph: no break, no host synchronisation) the loss-sized call gives
    the eager deaths, edges and gradients bit for bit; "auto" picks Borůvka there."""
    x = torch.from_numpy(rng.normal(size=(16, 100, 10))).float()

    def deaths_and_grad(fn, points):
        leaf = points.clone().requires_grad_()
        res = fn(leaf)
        res.deaths.sum().backward()
        return res.deaths.detach(), res.edges, leaf.grad

    compiled = torch.compile(lambda v: h0_persistence(v, "l1"), fullgraph=True, backend="aot_eager")
    eager = deaths_and_grad(lambda v: h0_persistence(v, "l1"), x)
    for got, want in zip(deaths_and_grad(compiled, x), eager):
        assert torch.equal(got, want)
    bad = x.clone()
    bad[3, 7, 2] = math.nan  # no error can be raised without the host: that cloud's deaths are NaN
    deaths = compiled(bad).deaths
    assert deaths[3].isnan().all() and torch.equal(deaths[[0, 1, 2, 4]], eager[0][[0, 1, 2, 4]])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's own imports inside Inductor
def test_inductor_on_the_cpu_keeps_the_rounding(rng):
    """Inductor's C++ (built without floating-point contraction) gives the eager l2 tree, deaths
    and gradients bit for bit on clusters 1e-3 wide at +-100, where lengths tie to the last bit."""
    x = torch.from_numpy(np.concatenate([rng.normal(size=(4, 40, 10)) * 1e-3 + 100,
                                         rng.normal(size=(4, 40, 10)) * 1e-3 - 100], axis=1)).float()
    compiled = torch.compile(lambda v: h0_persistence(v, "l2", backend="torch"), fullgraph=True)
    results = []
    for fn in (compiled, lambda v: h0_persistence(v, "l2", backend="torch")):
        leaf = x.clone().requires_grad_()
        res = fn(leaf)
        res.deaths.sum().backward()
        results.append((res.edges, res.deaths.detach(), leaf.grad))
    for got, want in zip(*results):
        assert torch.equal(got, want)


@pytest.fixture
def host_reads_fail(monkeypatch):
    """Every way a tensor's value reaches Python (a host synchronisation on a GPU) raises."""
    def refuse(*args, **kwargs):
        raise AssertionError("read a value back from the device")

    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_unchecked_call_never_waits_for_the_device(rng, monkeypatch, host_reads_fail, backend):
    """check=False (training): Borůvka's fixed rounds read nothing back; the host engine reads
    the points on the host anyway; either way a cloud with inf gets NaN deaths, the others theirs."""
    x = torch.from_numpy(rng.normal(size=(16, 100, 10))).float()
    bad = x.clone()
    bad[5, 0, 0] = math.inf
    bad[9, 3, 1] = math.nan
    if backend == "torch":
        res = h0_persistence(x, "l1", backend=backend, check=False)
        with pytest.raises(AssertionError, match="read a value back"):
            h0_persistence(x, "l1", backend=backend)  # the checked call reads max|x| once
        deaths = h0_persistence(bad, "l1", backend=backend, check=False).deaths
    monkeypatch.undo()
    if backend == "native":
        res = h0_persistence(x, "l1", backend=backend, check=False)
        deaths = h0_persistence(bad, "l1", backend=backend, check=False).deaths
    assert torch.equal(res.deaths, h0_persistence(x, "l1").deaths)
    good = [k for k in range(16) if k not in (5, 9)]
    assert deaths[[5, 9]].isnan().all() and torch.equal(deaths[good], res.deaths[good])


@pytest.mark.parametrize("threshold", [float("nan"), -1.0, "1", True])
def test_h0_diagram_refuses_a_bad_threshold(threshold):
    # NaN or a negative threshold had silently left every class essential
    with pytest.raises(ValueError, match="threshold"):
        h0_persistence(torch.randn(6, 2)).diagram(threshold)
    assert h0_persistence(torch.randn(6, 2)).diagram(torch.tensor(0.0)).essential.shape == (6,)
