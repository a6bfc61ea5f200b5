"""The fused Prim kernel (backend "triton") beyond the engine comparisons of test_h0: distance
matrices, the loss's gradients, the clouds it hands to Borůvka, and its errors.  Without a GPU it
runs in Triton's interpreter (conftest sets TRITON_INTERPRET=1)."""

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

from corel import ConnectivityLoss, h0_persistence, h0_persistence_from_distances  # noqa: E402
from corel.topology import boruvka, fused_prim, h0  # noqa: E402


def test_distance_matrices_give_the_native_tree(rng):
    pts = rng.integers(0, 4, size=(3, 40, 3)).astype(float)
    grid = torch.from_numpy(np.abs(pts[:, :, None] - pts[:, None]).sum(-1))  # many exact ties
    noise = torch.from_numpy(rng.random((2, 30, 30)))
    for matrix in (grid, grid.float(), noise + noise.mT):  # the last one is not a metric
        native, fused = (h0_persistence_from_distances(matrix, backend=b) for b in ("native", "triton"))
        assert torch.equal(native.edges, fused.edges) and torch.equal(native.deaths, fused.deaths)


def test_loss_gradients_equal_the_native_engine(rng):
    z = torch.from_numpy(rng.normal(size=(60, 4 * 10))).float()
    grads = []
    for backend in ("native", "triton"):
        leaf = z.clone().requires_grad_()
        ConnectivityLoss(eta=2.0, branches=4, backend=backend)(leaf).backward()
        grads.append(leaf.grad)
    assert torch.equal(*grads)


def test_clouds_the_kernel_does_not_take_go_to_boruvka(rng, monkeypatch):
    calls = []
    monkeypatch.setattr(fused_prim, "FUSED_MAX_POINTS", 20)
    monkeypatch.setattr(boruvka, "minimum_spanning_tree",
                        lambda data, p, original=boruvka.minimum_spanning_tree: calls.append(p) or original(data, p))
    for n, metric in ((21, "l1"), (20, 3.0)):  # too many points; a metric with torch's rounding
        x = torch.from_numpy(rng.normal(size=(2, n, 5)))
        fused, native = (h0_persistence(x, metric, backend=b) for b in ("triton", "native"))
        assert torch.equal(fused.edges, native.edges) and torch.equal(fused.deaths, native.deaths)
    assert calls == [1.0, 3.0]
    assert fused_prim.fits(20, 1.0) and fused_prim.fits(20, None) and not fused_prim.fits(20, 3.0)


def test_two_points_and_one(rng):
    x = torch.tensor([[0.0, 1.0], [3.0, -1.0]])
    assert h0_persistence(x, "l1", backend="triton").deaths.tolist() == [5.0]
    assert h0_persistence(x[:1], "l1", backend="triton").deaths.shape == (0,)


def test_without_a_device_or_the_package_it_says_so(monkeypatch):
    x = torch.randn(5, 2)
    monkeypatch.setattr(fused_prim, "_INTERPRETED", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="needs a CUDA device.*TRITON_INTERPRET=1"):
        h0_persistence(x, backend="triton")
    monkeypatch.setattr(h0.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="needs the triton package"):
        h0_persistence(x, backend="triton")
