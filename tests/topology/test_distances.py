"""Edge lengths in one fixed rounding (the same bits whatever the layout, and so on any device), and
the public edge_lengths: distances at given edges, with clear errors for bad edges."""

import math

import numpy as np
import pytest
import torch

from conftest import lp_distances
from corel.topology.distances import edge_lengths, lp_norm, pairwise_distances
from torch import cdist


def _oracle(diff: np.ndarray, p: float) -> np.ndarray:
    """float32 terms into eight partial sums (term i into partial i mod 8, in increasing i), the
    partials added in halves, one exactly rounded numpy operation at a time: the order lp_norm
    promises on every device."""
    out = []
    for row in diff.astype(np.float32):
        terms = np.abs(row) if p == 1 else row * row
        partial = [np.float32(0)] * 8
        for i, term in enumerate(terms):
            partial[i % 8] = np.float32(partial[i % 8] + term)
        while len(partial) > 1:
            half = len(partial) // 2
            partial = [np.float32(partial[i] + partial[i + half]) for i in range(half)]
        out.append(partial[0] if p == 1 else np.sqrt(partial[0]))
    return np.array(out, dtype=np.float32)


@pytest.mark.parametrize("p", [1.0, 2.0])
@pytest.mark.parametrize("d", [1, 10, 37, 64, 160])
def test_lengths_follow_one_order_whatever_the_layout(rng, p, d):
    # coordinates over 12 orders of magnitude: any other order of additions rounds differently
    diff = (rng.normal(size=(300, d)) * 10.0 ** rng.integers(-6, 6, size=(300, d))).astype(np.float32)
    want = _oracle(diff, p)
    flat = torch.from_numpy(diff)
    assert torch.equal(lp_norm(flat, p), torch.from_numpy(want))
    assert torch.equal(lp_norm(flat.flip(0).reshape(3, 100, d), p).reshape(-1).flip(0), torch.from_numpy(want))
    assert torch.equal(torch.stack([lp_norm(row, p) for row in flat[:20]]), torch.from_numpy(want[:20]))


def test_zero_length_has_zero_gradient():
    v = torch.zeros(3, 5, requires_grad=True)
    lp_norm(v, 2.0).sum().backward()
    assert torch.equal(v.grad, torch.zeros(3, 5))


def test_float32_roots_are_exactly_rounded(rng):
    """torch's CPU sqrt is one ulp off for many float32 values; the lengths' root never is
    (numpy's is the exactly rounded reference), including the hardest cases, next to squares."""
    from corel.topology.distances import _sqrt

    squares = np.arange(1, 1 << 12, dtype=np.float32) ** 2
    values = np.concatenate([squares, np.nextafter(squares, np.float32(np.inf)), np.nextafter(squares, np.float32(0)),
                             (rng.random(10 ** 5) * 10.0 ** rng.integers(-30, 30, 10 ** 5)).astype(np.float32)])
    assert np.array_equal(_sqrt(torch.from_numpy(values)).numpy(), np.sqrt(values))


def test_float64_roots_are_exactly_rounded(rng):
    """torch's CPU sqrt is one ulp off for 1% of float64 values; the lengths' root never is, next to
    squares, next to midpoints between two roots, at and next to powers of two, over 1,780 binades."""
    from corel.topology.distances import _sqrt

    squares = np.arange(1, 1 << 16, dtype=np.float64) ** 2
    roots = rng.random(10 ** 5) + 1
    midpoints = (roots + np.spacing(roots) / 2) ** 2  # r + u/2 rounds to r or r + u: its square is near a midpoint
    powers = np.ldexp(1.0, np.arange(-890, 1000))
    near = np.concatenate([squares, midpoints, powers])
    values = np.concatenate([near, np.nextafter(near, np.inf), np.nextafter(near, 0),
                             np.ldexp(rng.random(10 ** 5) + 0.5, rng.integers(-890, 990, 10 ** 5)), [0.0]])
    got = _sqrt(torch.from_numpy(values))
    assert np.array_equal(got.numpy(), np.sqrt(values))
    leaf = torch.from_numpy(values[:1000]).requires_grad_()
    _sqrt(leaf).sum().backward()  # torch's derivative of the root
    assert torch.equal(leaf.grad, 0.5 / leaf.detach().sqrt())


@pytest.mark.parametrize("metric, p", [("l1", 1), ("l2", 2), ("linf", np.inf), (3.0, 3), (1.5, 1.5)])
def test_edge_lengths_are_the_distances_at_the_edges(rng, metric, p):
    x = torch.from_numpy(rng.normal(size=(2, 3, 12, 4)))
    edges = torch.from_numpy(rng.integers(0, 12, size=(2, 3, 7, 2)))
    got = edge_lengths(x, edges, metric)
    assert got.shape == (2, 3, 7)
    for b, c in np.ndindex(2, 3):
        ends = x[b, c].numpy()[edges[b, c].numpy()]
        np.testing.assert_allclose(got[b, c].numpy(), np.linalg.norm(ends[:, 0] - ends[:, 1], ord=p, axis=1),
                                   rtol=1e-12)
    leaf = x[0, 0].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda y: edge_lengths(y, edges[0, 0], metric), (leaf,))
    assert edge_lengths(x, edges[..., :0, :], metric).shape == (2, 3, 0)


def test_edge_lengths_name_bad_edges():
    x = torch.zeros(2, 5, 3)
    good = torch.zeros(2, 4, 2, dtype=torch.long)
    for edges, message in [(good.float(), "integer torch.Tensor"), (good.tolist(), "integer torch.Tensor"),
                           (good[0], "leading dimensions"), (good[..., :1], r"\(\.\.\., k, 2\)"),
                           (torch.zeros(3, 4, 2, dtype=torch.long), "leading dimensions"), (good - 1, "outside 0..4"),
                           (good + 5, "outside 0..4")]:
        with pytest.raises(ValueError, match=message):
            edge_lengths(x, edges)
    assert torch.equal(edge_lengths(x, good.int()), torch.zeros(2, 4))  # int32 indices are fine


@pytest.mark.parametrize("exponent", [70, -90])
@pytest.mark.parametrize("metric", ["l1", "l2", 3.0, 1.5, 600.0])
def test_pairwise_distances_scale_exactly(rng, exponent, metric):
    """Squares of 1e21 overflow float32 and those of 1e-27 underflow: torch.cdist gives inf or 0
    there; the distances of 2**k x are those of x times 2**k."""
    x = torch.from_numpy(rng.normal(size=(2, 30, 5))).float()
    k = torch.tensor(exponent)
    assert torch.equal(pairwise_distances(torch.ldexp(x, k), metric), torch.ldexp(pairwise_distances(x, metric), k))


@pytest.mark.parametrize("p", [1.5, 3.0, 30.0, 600.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pairwise_distances_under_another_p_are_exact(rng, p, dtype, monkeypatch):
    """Against the oracle on clusters 1e-3 wide with duplicates, batched and in row tiles: torch.cdist
    sums raw p-th powers, which gave 0 for the clusters' edges at p = 30 in float32 and inf beyond
    p = 512.  The backward runs in the same tiles (memory O(n^2), as torch.cdist's): finite at the
    duplicates, equal to autograd through the whole computation, to finite differences elsewhere,
    twice differentiable, and under torch.func."""
    from corel.topology import distances

    cloud = rng.normal(size=(2, 24, 4)) * 1e-3 + np.where(np.arange(24) % 2, 1.0, 0.0)[:, None]
    cloud[:, 1] = cloud[:, 3]  # a duplicate
    x = torch.from_numpy(cloud).to(dtype)
    monkeypatch.setattr(distances, "PAIRWISE_TILE_ELEMENTS", 5 * x.numel())  # 5 rows a tile
    got = pairwise_distances(x, p)
    for k in range(2):
        np.testing.assert_allclose(got[k].double().numpy(), lp_distances(x[k].double().numpy(), p),
                                   rtol=1e-6 if dtype == torch.float32 else 1e-13, atol=0)
    half = x.to(torch.bfloat16)  # measured in float32, returned in its dtype
    assert torch.equal(pairwise_distances(half, p), pairwise_distances(half.float(), p).to(torch.bfloat16))
    leaf = x.double().requires_grad_()
    weights = torch.from_numpy(rng.normal(size=(2, 24, 24)))
    (got,) = torch.autograd.grad((pairwise_distances(leaf, p) * weights).sum(), leaf)
    # the tiled backward against autograd through the whole (n, n, d) computation
    (want,) = torch.autograd.grad((distances.lp_pairwise(leaf, leaf, p) * weights).sum(), leaf)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    if p < 100:  # finite differences of 1e-6 resolve nothing at larger p
        distinct = torch.from_numpy(rng.normal(size=(2, 7, 3))).requires_grad_()
        monkeypatch.setattr(distances, "PAIRWISE_TILE_ELEMENTS", 3 * distinct.numel())  # 3 rows a tile
        assert torch.autograd.gradcheck(lambda v: pairwise_distances(v, p), (distinct,))
        assert torch.autograd.gradgradcheck(lambda v: pairwise_distances(v, p), (distinct,))
        jacobian = torch.func.jacrev(lambda v: pairwise_distances(v, p))(distinct.detach())
        torch.testing.assert_close(jacobian, torch.autograd.functional.jacobian(
            lambda v: distances.lp_pairwise(v, v, p), distinct.detach()), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf, 3.0, 1.5])
def test_edge_length_gradients_are_torchs(rng, p):
    """The closed-form backward against autograd through torch's own norm: on points that share
    coordinates (|diff|^(p-2) is infinite there for p < 2; torch's rule gives 0), duplicates, and
    through torch.func (jacrev, vmap); a double backward keeps the first derivatives' bits."""
    x = torch.from_numpy(rng.integers(0, 3, size=(12, 3)).astype(float)).requires_grad_()  # shared coordinates
    edges = torch.from_numpy(rng.integers(0, 12, size=(20, 2)))
    weights = torch.from_numpy(rng.normal(size=20))

    def reference(points: torch.Tensor) -> torch.Tensor:
        diff = points[edges[:, 0]] - points[edges[:, 1]]
        return torch.linalg.vector_norm(diff, ord=p, dim=-1)

    (got,) = torch.autograd.grad((edge_lengths(x, edges, p) * weights).sum(), x)
    (want,) = torch.autograd.grad((reference(x) * weights).sum(), x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert torch.isfinite(got).all()
    jacobian = torch.func.jacrev(lambda v: edge_lengths(v, edges, p))(x.detach())
    torch.testing.assert_close(jacobian, torch.autograd.functional.jacobian(reference, x.detach()), rtol=1e-12, atol=1e-12)
    batch = torch.from_numpy(rng.normal(size=(4, 12, 3)))
    assert torch.equal(torch.func.vmap(lambda v: edge_lengths(v, edges, p))(batch),
                       edge_lengths(batch, edges.expand(4, -1, -1), p))
    edge_sets = torch.from_numpy(rng.integers(0, 12, size=(3, 20, 2)))  # vmap over the edges too
    assert torch.equal(torch.func.vmap(lambda e: edge_lengths(x.detach(), e, p))(edge_sets),
                       edge_lengths(x.detach().expand(3, -1, -1), edge_sets, p))
    (again,) = torch.autograd.grad((edge_lengths(x, edges, p) * weights).sum(), x, create_graph=True)
    assert torch.equal(again.detach(), got)


@pytest.mark.parametrize("metric", ["l1", "linf"])
def test_pairwise_distance_gradients_survive_huge_coordinates(rng, metric):
    """No powers, no scaling: torch's gradient, the same at 2**126 x as at x (autograd through a
    scaling multiplied it by 2**126 and overflowed)."""
    x = torch.from_numpy(rng.normal(size=(30, 4)) / 32).float()  # distances stay finite at 2**126 x

    def gradient(points: torch.Tensor) -> torch.Tensor:
        leaf = points.clone().requires_grad_()
        pairwise_distances(leaf, metric).sum().backward()
        return leaf.grad

    assert torch.equal(gradient(torch.ldexp(x, torch.tensor(126))), gradient(x))


def test_lengths_under_large_p_do_not_underflow():
    """Each length is taken relative to its largest term: 0.3**100 underflows float32, the length does not."""
    x = torch.tensor([[0.0, 0.0], [0.3, 0.0], [1.0, 0.0]])
    assert edge_lengths(x, torch.tensor([[0, 1], [0, 2]]), 100.0).tolist() == pytest.approx([0.3, 1.0], rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("p", [1.0, 2.0, math.inf, 3.0, 1.5])
def test_edge_lengths_are_the_death_times(rng, dtype, p):
    """At a tree's edges, edge_lengths gives its death times bit for bit: measured in the same dtype."""
    from corel import h0_persistence

    x = torch.from_numpy(rng.normal(size=(4, 30, 5))).to(dtype)
    h = h0_persistence(x, p)
    assert torch.equal(edge_lengths(x, h.edges, p), h.deaths)


@pytest.mark.parametrize("p", [1.2, 1.5, 3.0])
def test_second_derivatives_at_duplicates_and_shared_coordinates_are_finite(p):
    """At a zero-length edge, and at a coordinate two points share, the closed form takes
    pow(0, p - 1), whose derivative is infinite for p < 2: masked, a double backward stays finite
    (shared coordinates gave NaN), for edge lengths and pairwise distances alike."""
    x = torch.tensor([[0.3, 0.7], [0.3, 0.7], [1.1, -0.4], [0.3, 1.5]], dtype=torch.float64, requires_grad=True)
    edges = torch.tensor([[0, 1], [1, 2], [0, 3]])  # a duplicate, a general edge, a shared first coordinate
    for lengths in (lambda v: edge_lengths(v, edges, p), lambda v: pairwise_distances(v, p)):
        (gradient,) = torch.autograd.grad(lengths(x).square().sum(), x, create_graph=True)
        (second,) = torch.autograd.grad(gradient.square().sum(), x)
        assert torch.isfinite(second).all()


def test_cdist_in_row_blocks_equals_one_call(rng, monkeypatch):
    """torch.cdist on CUDA fails beyond 2**31 - 1 entries per call, so corel cuts its calls into
    row blocks: the same values, and the same gradients, as one call; Borůvka's rows too."""
    import corel.topology.distances as distances
    from corel import h0_persistence

    x = torch.from_numpy(rng.normal(size=(2, 30, 4)))
    whole = {p: distances.cdist(x, x, p) for p in (1.0, 2.0, math.inf)}
    whole_grad = torch.autograd.grad(distances.cdist(x.requires_grad_(), x, 1.0).sum(), x)[0]
    cloud = torch.from_numpy(rng.normal(size=(400, 4)))  # neighbour lists: rows from cdist
    tree = h0_persistence(cloud, "l1", backend="native")
    calls = []
    monkeypatch.setattr(torch, "cdist", lambda a, *args, **kwargs: calls.append(a.shape[-2]) or cdist(a, *args, **kwargs))
    monkeypatch.setattr(distances, "CDIST_MAX_ENTRIES", 2 * 30 * 7)  # blocks of 7 rows: 5 blocks
    for p, values in whole.items():
        assert torch.equal(distances.cdist(x.detach(), x.detach(), p), values)
    assert torch.equal(torch.autograd.grad(distances.cdist(x, x, 1.0).sum(), x)[0], whole_grad)
    assert max(calls) == 7
    monkeypatch.setattr(distances, "CDIST_MAX_ENTRIES", 400 * 50)
    calls.clear()
    blocked = h0_persistence(cloud, "l1", backend="torch")
    assert calls and max(calls) <= 50
    assert torch.equal(blocked.edges, tree.edges) and torch.equal(blocked.deaths, tree.deaths)


@pytest.mark.parametrize("d", [1, 2, 7])
def test_the_sorted_sum_onto_points_is_the_serial_one(rng, d):
    """The GPU's order-keeping sum (index_put with accumulate, a stable sort, each point's run in
    order) gives the CPU's serial scatter_add bit for bit; on the CPU index_put adds serially only
    on one thread.  Points of many edges, contributions over 12 orders of magnitude: any other
    order of adding them rounds differently."""
    from corel.topology.distances import _onto_points

    scaled = torch.zeros(3, 20, d)
    edges = torch.from_numpy(rng.integers(0, 4, size=(3, 60, 2))).sort(dim=-1).values  # 4 points take most
    both = torch.from_numpy(rng.uniform(-1, 1, size=(3, 120, d)) * np.logspace(-6, 6, 120)[None, :, None]).float()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial, ordered = (_onto_points(scaled, edges, both, sort=s) for s in (False, True))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(ordered, serial)
    reordered = _onto_points(scaled, edges.flip(1), both.view(3, 60, 2, d).flip(1).reshape(3, 120, d), sort=False)
    assert not torch.equal(reordered, serial)  # the order matters: the check has teeth
