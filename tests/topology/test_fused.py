"""The Triton kernels (backend "triton") beyond the engine comparisons of test_h0: distance
matrices, the loss's gradients, the pairwise kernel and Borůvka on it, the clouds left to plain
Borůvka, and the errors.  Without a GPU they run in Triton's interpreter (conftest sets
TRITON_INTERPRET=1)."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import NO_TRITON

if NO_TRITON:
    pytest.skip(NO_TRITON, allow_module_level=True)
import triton  # noqa: E402

from corel import ConnectivityLoss, h0_persistence, h0_persistence_from_distances  # noqa: E402
from corel.topology import boruvka, fused, h0  # noqa: E402
from corel.topology.distances import compared_pairwise, fixed_order_pairwise  # noqa: E402

# the kernels' own entry points take tensors where they run: the GPU, or the CPU in the interpreter
KERNEL_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_distance_matrices_give_the_native_tree(rng):
    pts = rng.integers(0, 4, size=(3, 40, 3)).astype(float)
    grid = torch.from_numpy(np.abs(pts[:, :, None] - pts[:, None]).sum(-1))  # many exact ties
    noise = torch.from_numpy(rng.random((2, 30, 30)))
    for matrix in (grid, grid.float(), noise + noise.mT):  # the last one is not a metric
        native, kernels = (h0_persistence_from_distances(matrix, backend=b) for b in ("native", "triton"))
        assert torch.equal(native.edges, kernels.edges) and torch.equal(native.deaths, kernels.deaths)


def test_loss_gradients_equal_the_native_engine(rng):
    z = torch.from_numpy(rng.normal(size=(60, 4 * 10))).float()
    grads = []
    for backend in ("native", "triton"):
        leaf = z.clone().requires_grad_()
        ConnectivityLoss(eta=2.0, branches=4, backend=backend)(leaf).backward()
        grads.append(leaf.grad)
    assert torch.equal(*grads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [1.0, 2.0])
def test_pairwise_values_equal_the_fixed_order_sums(rng, dtype, p):
    """Tiles cut through both sides (m, n not multiples of 32) and d not a multiple of 8."""
    for shape_a, shape_b in (((37, 13), (70, 13)), ((2, 33, 21), (2, 5, 21)), ((1, 3, 8), (1, 40, 8)),
                             ((0, 4), (6, 4)), ((2, 0, 4), (2, 6, 4))):  # no rows (Borůvka's tiles can ask)
        a = torch.from_numpy(rng.normal(size=shape_a) * 1e-3 + 100).to(dtype)  # clustered: rounding matters
        b = torch.from_numpy(rng.normal(size=shape_b) * 1e-3 + 100).to(dtype)
        kernel = fused.pairwise_values(a.to(KERNEL_DEVICE), b.to(KERNEL_DEVICE), p).cpu()
        assert torch.equal(kernel, fixed_order_pairwise(a, b, p))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("metric", ["l1", "l2", "linf", "matrix"])
def test_prim_values_are_the_compared_ones_and_the_tree_comes_sorted(rng, dtype, metric):
    """The fused Prim's values bit for bit: the fixed-order sums (squared for l2), maxima or matrix
    entries at its edges (a sum in another order changes the tree on a GPU, where the interpreter
    may not show it); and its tree in (value, i, j) order."""
    cloud = np.concatenate([rng.normal(size=(2, 30, 21)) * 1e-3 + 100, rng.normal(size=(2, 33, 21)) * 1e-3 - 100], 1)
    # clustered, coordinates over 12 orders of magnitude, d not a multiple of 8: the order of additions matters
    x = torch.from_numpy(cloud * 10.0 ** rng.integers(-6, 6, size=21)).to(dtype)
    p = None if metric == "matrix" else {"l1": 1.0, "l2": 2.0, "linf": math.inf}[metric]
    compared = compared_pairwise(x, x, 2.0 if p is None else p)
    data = compared if p is None else x  # a matrix: the squared l2 sums (not a metric; every value distinct)
    values, eids = fused.prim(data.to(KERNEL_DEVICE).contiguous(), p)
    n = x.shape[1]
    assert torch.equal(values.cpu(), compared.flatten(1).gather(1, eids.cpu()))
    edges = fused.minimum_spanning_tree(data.to(KERNEL_DEVICE), p).cpu()
    tree = compared[torch.arange(len(x))[:, None], edges[..., 0], edges[..., 1]]
    order = torch.from_numpy(np.lexsort((edges[..., 1].numpy(), edges[..., 0].numpy(), tree.numpy()), axis=-1))
    assert torch.equal(order, torch.arange(n - 1).expand(len(x), -1))
    added = torch.stack([eids // n, eids % n], dim=-1).cpu()
    for k in range(len(x)):  # the same edges as Prim added them
        assert set(map(tuple, edges[k].tolist())) == set(map(tuple, added[k].tolist()))


@pytest.mark.parametrize("schedule", ["fixed rounds", "neighbour lists", "neighbour lists in row tiles"])
@pytest.mark.parametrize("metric", ["l1", "l2"])
def test_boruvka_on_the_pairwise_kernel_gives_the_native_tree(rng, monkeypatch, schedule, metric):
    monkeypatch.setattr(fused, "FUSED_MAX_POINTS", 0)  # every cloud past the fused Prim
    monkeypatch.setattr(boruvka, "LIST_MIN_POINTS", 1 << 20 if schedule == "fixed rounds" else 0)
    monkeypatch.setattr(boruvka, "LIST_LENGTH", 3)  # lists that run out: rescans and whole rows
    if schedule.endswith("row tiles"):
        monkeypatch.setattr(boruvka, "FULL_MATRIX_ELEMENTS", 0)
        monkeypatch.setattr(boruvka, "TILE_ELEMENTS", 37 * 70)  # 37 rows a tile
    clouds = [rng.normal(size=(3, 70, 20)), np.repeat(rng.normal(size=(2, 15, 20)), 4, axis=1),
              rng.integers(0, 3, size=(1, 60, 3)).astype(float),
              np.concatenate([rng.normal(size=(1, 30, 40)) * 1e-3 + 100, rng.normal(size=(1, 30, 40)) * 1e-3 - 100], 1)]
    for cloud in clouds:
        for dtype in (torch.float32, torch.float64):
            x = torch.from_numpy(cloud).to(dtype)
            native, kernels = (h0_persistence(x, metric, backend=b) for b in ("native", "triton"))
            assert torch.equal(native.edges, kernels.edges) and torch.equal(native.deaths, kernels.deaths)


def test_clouds_the_kernels_do_not_take_go_to_plain_boruvka(rng, monkeypatch):
    calls = []
    monkeypatch.setattr(fused, "FUSED_MAX_POINTS", 20)
    original = boruvka.minimum_spanning_tree
    monkeypatch.setattr(boruvka, "minimum_spanning_tree",
                        lambda data, p, pairwise=None: calls.append((p, pairwise)) or original(data, p, pairwise))
    for n, metric in ((21, "l1"), (21, "linf"), (20, 3.0)):  # too many points; a metric with torch's rounding
        x = torch.from_numpy(rng.normal(size=(2, n, 5)))
        kernels, native = (h0_persistence(x, metric, backend=b) for b in ("triton", "native"))
        assert torch.equal(kernels.edges, native.edges) and torch.equal(kernels.deaths, native.deaths)
    assert calls == [(1.0, fused.pairwise_values), (math.inf, None), (3.0, None)]
    assert fused.fits(20, 5, 1.0) and fused.fits(20, 20, None) and not fused.fits(20, 5, 3.0)



def test_one_programs_work_is_bounded():
    """n^2 d on one multiprocessor: 16 codes' clouds of 1,000 points in d = 10 fuse, one cloud of
    1,000 points in d = 160 goes to Borůvka on the pairwise kernel (faster on an H100); distance
    matrices fuse up to FUSED_MAX_POINTS."""
    assert fused.fits(1000, 10, 2.0) and not fused.fits(1000, 160, 2.0) and not fused.fits(1025, 2, 1.0)
    assert fused.fits(1024, 1024, None)  # a matrix's step reads one row: n^2 work, whatever its width


def test_two_points_and_one(rng):
    x = torch.tensor([[0.0, 1.0], [3.0, -1.0]])
    assert h0_persistence(x, "l1", backend="triton").deaths.tolist() == [5.0]
    assert h0_persistence(x[:1], "l1", backend="triton").deaths.shape == (0,)


def test_without_a_device_or_the_package_it_says_so(monkeypatch):
    x = torch.randn(5, 2)
    monkeypatch.setattr(fused, "INTERPRETED", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="needs a CUDA device.*TRITON_INTERPRET=1"):
        h0_persistence(x, backend="triton")
    monkeypatch.setattr(h0, "_HAS_TRITON", False)
    with pytest.raises(ValueError, match="needs the triton package"):
        h0_persistence(x, backend="triton")


# Compiles both kernels for an H100 (sm_90) with Triton's own toolchain, no GPU needed, with
# floating-point fusion off and on (torch.compile launches user kernels with Triton's default, on),
# and counts fused multiply-adds in the PTX and in the machine code; a plain x * x + acc kernel
# shows that the count sees contraction where it happens.
_COMPILE_FOR_H100 = """
import json, os, subprocess, sys, tempfile
import triton
import triton.backends.nvidia as nvidia
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import corel.topology.fused as fused

@triton.jit
def plain(x_ptr, out_ptr):
    i = tl.arange(0, 16)
    x = tl.load(x_ptr + i)
    tl.store(out_ptr + i, x * x + tl.load(out_ptr + i))

cuobjdump = os.path.join(os.path.dirname(nvidia.__file__), "bin", "cuobjdump")
if not os.path.exists(cuobjdump):
    print(json.dumps("triton ships no cuobjdump here"))
    sys.exit()
cases = [(plain, {"x_ptr": "*fp32", "out_ptr": "*fp32"}, {}, 1)]
for dtype in ("fp32", "fp64"):
    prim = {"data": f"*{dtype}", "values_out": f"*{dtype}", "edges_out": "*i64", "n": "i32", "d": "i32"}
    pairwise = {"a": f"*{dtype}", "b": f"*{dtype}", "out": f"*{dtype}", "m": "i32", "n": "i32", "d": "i32"}
    cases += [(fused._prim, prim, {"METRIC": m, "BLOCK": 128}, fused._warps(128)) for m in (1, 2)]
    cases += [(fused._pairwise, pairwise, {"SQUARED": s, "TILE": fused._TILE}, 4) for s in (False, True)]
found = []
for fusion in (False, True):
    for fn, signature, constants, warps in cases:
        source = ASTSource(fn, {**signature, **{name: "constexpr" for name in constants}}, constants)
        kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                                options={"num_warps": warps, "enable_fp_fusion": fusion})
        with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
            cubin.write(kernel.asm["cubin"])
            cubin.flush()
            sass = subprocess.run([cuobjdump, "-sass", cubin.name], capture_output=True, text=True, check=True).stdout
        ptx = kernel.asm["ptx"]
        found.append(dict(fusion=fusion, kernel=fn.__name__, case=str((signature, constants)), ptx=ptx.count("fma."),
                          sass=sass.count("FFMA") + sass.count("DFMA"), ftz=".ftz" in ptx))
print(json.dumps(found))
"""


@pytest.mark.skipif(tuple(map(int, triton.__version__.split(".")[:2])) < (3, 5),
                    reason="written against Triton 3.5+'s ahead-of-time compile API (checked with 3.9)")
def test_kernels_compile_for_an_h100_without_multiply_adds(tmp_path):
    """Neither kernel contracts a multiply and an add into one rounding (nor flushes subnormals),
    with floating-point fusion off or on, so GPU values equal the CPU's under torch.compile too."""
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    script = tmp_path / "compile_for_h100.py"  # a file: triton.jit reads its kernels' source
    script.write_text(_COMPILE_FOR_H100)
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])
    if isinstance(found, str):
        pytest.skip(found)
    assert len(found) == 18
    for case in found:
        if case["kernel"] == "plain":  # the count has teeth: with fusion on, x * x + acc is one FMA
            assert (case["sass"] > 0) == case["fusion"], case
        else:
            assert case["ptx"] == 0 and case["sass"] == 0 and not case["ftz"], case
