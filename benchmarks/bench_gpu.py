"""GPU benchmark of corel's persistence and training, next to torchph and torch.cdist, in one call.

    python benchmarks/bench_gpu.py [--budget 270] [--no-torchph] [--out results.json]

One line per case, milliseconds, median of repeats, forward + backward:
  corel-gpu    corel on the GPU, backend "torch" (Borůvka in torch operations)
  compiled     the same loss through torch.compile(mode="reduce-overhead"): one CUDA graph
  triton       corel on the GPU, backend "triton" (Prim in one fused Triton kernel for clouds of
               up to 1,024 points with n^2 d <= 2^25; beyond, Borůvka on rows from the Triton pairwise
               kernel); what "auto" picks on NVIDIA GPUs
  tri-comp     the loss on backend "triton" through torch.compile(mode="reduce-overhead")
  corel-host   corel on the GPU with the tree chosen by the compiled kernel on the host ("native")
  corel-cpu    corel on the CPU of the same machine (forward only, as in the issue's table)
  torchph      the paper's CUDA library, when importable (the checkout's .anchors/torchph, built on
               first use: copy the package ../shared/anchors/torchph/torchph there and carry it)
  cdist        torch.cdist alone on the GPU, the floor of any engine
and whether the GPU's tree equals the CPU's (deaths and edges).  In this order, the targets first:
the loss; the autoencoder's training step at lambda = 20 (on each H0 engine) and 0, and two epochs
of CIFAR-10-sized random images through ``corel train --accelerator gpu`` on the engine whose loss
was fastest; the single clouds.  Then, while the budget lasts: the loss as training runs it
(check=False, no host synchronisation) on each engine, with the kernels and copies it puts on the
GPU (the profiler's count, against the tests' CPU-side operation counts); the fused kernel against
Borůvka and the host path for batches of 16 clouds of 50 to 1,000 points (where "auto" should
choose which); Borůvka's schedules side by side (fixed rounds, neighbour lists, lists reading l2
rows from cdist instead of the matmul expansion) for n = 500 to 5,000, to place
boruvka.LIST_MIN_POINTS.  Cases predicted to overrun --budget seconds are skipped, and said so; a
part that fails prints its traceback and the next part runs.  Without CUDA only the CPU columns
run.  The JSON (--out) keeps every time in seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from bench_training import loss_time, step_time
from corel import ConnectivityLoss, h0_persistence
from corel.topology import boruvka
from timing import timed

ROOT = Path(__file__).resolve().parents[1]
LOSS_CASES = [(16, 100, 10), (16, 150, 10)]
CLOUD_CASES = [(1000, "l1"), (2000, "l1"), (5000, "l1"), (20000, "l1"), (20000, "l2"), (50000, "l1"),
               (50000, "l2"), (100000, "l1"), (100000, "l2")]
CPU_MAX_POINTS = 20000
CDIST_MAX_POINTS = 20000  # torch.cdist on 50,000 points failed on an H100 (CUDA "invalid argument")
D = 160
SCHEDULE_POINTS = (500, 1000, 2000, 5000)
FUSED_POINTS = (50, 100, 200, 500, 1000)
PARTS = ("loss", "training", "clouds", "unchecked", "fused", "schedules")


def _torchph():
    """torchph's pershom module, or None (it needs CUDA and builds its extension on first import)."""
    if not torch.cuda.is_available():
        return None
    sys.path.insert(0, str(ROOT / ".anchors"))
    try:
        from torchph import pershom

        # a failed build only warns at import; its error comes at the first call
        pershom.vr_persistence_l1(torch.rand(5, 2, device="cuda"), 0, 0)
    except Exception as e:  # noqa: BLE001 - a failed JIT build is reported, not fatal
        print(f"torchph unavailable: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        return None
    return pershom


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f}"


def _backward(fn):
    """fn(x) -> scalar loss; returns a closure that runs forward and backward on a fresh leaf."""
    def run(x: torch.Tensor):
        leaf = x.detach().requires_grad_()
        fn(leaf).backward()
    return run


def _attempt(fn, *args):
    """fn(*args), or "out of memory", or the first line of the error it raised (a failed compile
    is reported, the other columns stand)."""
    try:
        return fn(*args)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return "out of memory"
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def _cell(value) -> str:
    """A table cell: milliseconds, "-" (not run), "OOM", "skipped" or "failed" (the JSON keeps why)."""
    if isinstance(value, float) or value is None:
        return _ms(value)
    return {"out of memory": "OOM"}.get(value, "skipped" if value.startswith("skipped") else "failed")


def _gpu_activities(backend: str, codes: int, branches: int, dims: int) -> int:
    """Kernels and copies one unchecked forward + backward of the loss puts on the GPU (the
    profiler's count): what the CPU-side proxy (tests' operation counts) stands for."""
    from torch.profiler import ProfilerActivity, profile

    loss = ConnectivityLoss(eta=2.0, branches=branches, backend=backend, check=False)
    z = torch.randn(codes, branches * dims, device="cuda", requires_grad=True)
    loss(z).backward()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        loss(z).backward()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def unchecked_loss_cases(results: list) -> None:
    """The paper's loss as training runs it (check=False: no host synchronisation) on each engine,
    eager, with the GPU activities it launches."""
    b, n, d = LOSS_CASES[0]
    row: dict = {"case": f"loss {b}x{n}x{d} unchecked"}
    for backend in ("torch", "native", "triton"):
        row[f"{backend}_seconds"] = _attempt(lambda: loss_time(200, "cuda", backend=backend, codes=n, branches=b, dims=d,
                                                          check=False))
        row[f"{backend}_gpu_activities"] = _attempt(lambda: _gpu_activities(backend, n, b, d))
    def said(backend: str) -> str:
        seconds, count = row[f"{backend}_seconds"], row[f"{backend}_gpu_activities"]
        return (f"{backend} {_cell(seconds)}" + (" ms" if isinstance(seconds, float) else "")
                + (f" / {count} GPU activities" if isinstance(count, int) else ""))

    print(f"{row['case']} (as training runs it), eager: " + ", ".join(map(said, ("torch", "native", "triton"))),
          flush=True)
    results.append(row)


def loss_cases(pershom, cuda: bool, results: list) -> None:
    print(f"\n{'ConnectivityLoss fwd+bwd':<28} {'corel-gpu':>10} {'compiled':>10} {'triton':>10} {'tri-comp':>10}"
          f" {'corel-host':>10} {'corel-cpu':>10} {'torchph':>10} {'torchph/corel':>13}")
    for b, n, d in LOSS_CASES:
        shape = dict(codes=n, branches=b, dims=d)
        row = {"case": f"loss {b}x{n}x{d}", "corel_cpu": loss_time(200, "cpu", **shape)}
        if cuda:
            row["corel_gpu"] = loss_time(200, "cuda", backend="torch", **shape)
            row["corel_host"] = loss_time(200, "cuda", backend="native", **shape)
            row["corel_triton"] = _attempt(lambda: loss_time(200, "cuda", backend="triton", **shape))
            if (b, n, d) == LOSS_CASES[0]:  # compiling takes tens of seconds: the paper's case only
                # the fixed rounds trace into one graph: CUDA graphs replay it in one launch; so may
                # the fused kernel (torch.compile takes user-defined Triton kernels)
                row["corel_gpu_compiled"] = _attempt(lambda: loss_time(200, "cuda", backend="torch",
                                                                       compile_mode="reduce-overhead", **shape))
                row["corel_triton_compiled"] = _attempt(lambda: loss_time(200, "cuda", backend="triton",
                                                                          compile_mode="reduce-overhead", **shape))
        if pershom is not None:
            z = torch.randn(n, b * d, device="cuda")

            def authors(z: torch.Tensor) -> torch.Tensor:  # one call per branch, as the authors' code does
                total = z.new_zeros(())
                for k in range(b):
                    deaths = pershom.vr_persistence_l1(z[:, k * d:(k + 1) * d].contiguous(), 0, 0)[0][0][:, 1]
                    total = total + (deaths - 2.0).abs().sum()
                return total

            row["torchph"] = _attempt(lambda: timed(lambda: _backward(authors)(z), 20, warmup=2, cuda=True)[0])
        columns = ("corel_gpu", "corel_gpu_compiled", "corel_triton", "corel_triton_compiled", "corel_host")
        best = min(t for t in map(row.get, columns) if isinstance(t, float)) if cuda else None
        ratio = f"{row['torchph'] / best:.0f}x" if isinstance(row.get("torchph"), float) and best else "-"
        print(f"{row['case']:<28} " + " ".join(f"{_cell(row.get(c)):>10}" for c in columns)
              + f" {_ms(row['corel_cpu']):>10} {_cell(row.get('torchph')):>10} {ratio:>13}", flush=True)
        results.append(row)


def _predicted(n: int, metric: str, measured: dict) -> float | None:
    """Seconds a cloud case should take, from the largest smaller case of the same metric."""
    smaller = [(m, t) for (m, met), t in measured.items() if met == metric and m < n]
    if not smaller:
        return None
    m, t = max(smaller)
    return t * (n / m) ** 2  # one scan of all pairs; the neighbour lists make the rounds cheap


def cloud_cases(pershom, cuda: bool, budget: float, start: float, results: list,
                cases: list[tuple[int, str]] = CLOUD_CASES) -> None:
    print(f"\n{'one cloud, d=160, fwd+bwd':<28} {'corel-gpu':>10} {'triton':>10} {'cdist':>10} {'corel/cdist':>11}"
          f" {'triton/cdist':>12} {'corel-cpu':>10} {'torchph':>12} {'same tree':>9}")
    measured: dict[tuple[int, str], float] = {}
    measured_triton: dict[tuple[int, str], float] = {}
    gen = torch.Generator().manual_seed(0)
    for n, metric in cases:
        x = torch.randn(n, D, generator=gen)
        row: dict = {"case": f"n={n} {metric}"}
        guess = _predicted(n, metric, measured)
        if guess is not None and time.perf_counter() - start + 3 * guess > budget:
            print(f"{row['case']:<28} skipped: predicted {guess:.0f} s per run, over the budget", flush=True)
            row["skipped_predicted_s"] = guess
            results.append(row)
            continue
        p = 1.0 if metric == "l1" else 2.0
        repeats = 5 if n <= 5000 else 1
        cpu = None
        if n <= CPU_MAX_POINTS:
            row["corel_cpu"], cpu = timed(lambda: h0_persistence(x, metric), repeats if n <= 5000 else 1)
        if cuda:
            xg = x.cuda()
            out = _attempt(lambda: timed(
                lambda: _backward(lambda v: h0_persistence(v, metric, backend="torch").deaths.sum())(xg), repeats,
                cuda=True))
            if isinstance(out, str):
                row["corel_gpu"] = out
            else:
                row["corel_gpu"] = out[0]
                measured[(n, metric)] = out[0]
                if cpu is not None:
                    gpu = h0_persistence(xg, metric, backend="torch")
                    row["same_tree"] = bool(torch.equal(gpu.edges.cpu(), cpu.edges) and torch.equal(gpu.deaths.cpu(), cpu.deaths))
                    row["max_death_difference"] = float((gpu.deaths.cpu() - cpu.deaths).abs().max())
            guess = _predicted(n, metric, measured_triton)
            if guess is not None and time.perf_counter() - start + 3 * guess > budget:
                row["triton"] = f"skipped: predicted {guess:.0f} s per run, over the budget"
            else:
                fused = _backward(lambda v: h0_persistence(v, metric, backend="triton").deaths.sum())
                row["triton"] = _attempt(lambda: timed(lambda: fused(xg), repeats, cuda=True)[0])
                if isinstance(row["triton"], float):
                    measured_triton[(n, metric)] = row["triton"]
                if cpu is not None and isinstance(row["triton"], float):
                    gpu = h0_persistence(xg, metric, backend="triton")
                    row["same_tree_triton"] = bool(torch.equal(gpu.edges.cpu(), cpu.edges)
                                                   and torch.equal(gpu.deaths.cpu(), cpu.deaths))
            if n <= CDIST_MAX_POINTS:
                row["cdist"] = _attempt(lambda: timed(lambda: torch.cdist(xg, xg, p=p), repeats, cuda=True)[0])
            if pershom is not None and metric == "l1" and n <= 5000:
                # torchph's own allocation failures come as RuntimeErrors: kept as the row's reason
                row["torchph"] = _attempt(lambda: timed(
                    lambda: _backward(lambda v: pershom.vr_persistence_l1(v, 0, 0)[0][0][:, 1].sum())(xg),
                    repeats, cuda=True)[0])
            del xg
            torch.cuda.empty_cache()
        ratios = [f"{row[c] / row['cdist']:.2f}" if isinstance(row.get(c), float) and isinstance(row.get("cdist"), float)
                  else "-" for c in ("corel_gpu", "triton")]
        same = "/".join(str(row[k]) for k in ("same_tree", "same_tree_triton") if k in row) or "-"
        print(f"{row['case']:<28} {_cell(row.get('corel_gpu')):>10} {_cell(row.get('triton')):>10} {_cell(row.get('cdist')):>10}"
              f" {ratios[0]:>11} {ratios[1]:>12} {_cell(row.get('corel_cpu')):>10} {_cell(row.get('torchph')):>12} {same:>9}",
              flush=True)
        results.append(row)


@contextlib.contextmanager
def _schedule(lists: bool, screen: bool = True):
    """Borůvka on the fixed rounds or the neighbour lists, l2 rows from the matmul expansion or
    from cdist, whatever n is."""
    saved = boruvka.LIST_MIN_POINTS, boruvka.SCREEN_MIN_DIM
    boruvka.LIST_MIN_POINTS = 0 if lists else 1 << 62
    boruvka.SCREEN_MIN_DIM = boruvka.SCREEN_MIN_DIM if screen else 1 << 62
    try:
        yield
    finally:
        boruvka.LIST_MIN_POINTS, boruvka.SCREEN_MIN_DIM = saved


def fused_cases(results: list) -> None:
    """Where the fused kernel beats Borůvka and the host path: forward only, 16 clouds of n
    points in dimension 10 (the loss's shape), by n."""
    print(f"\n{'16 clouds x n, d=10, fwd':<28} {'triton':>10} {'torch':>10} {'host':>10}")
    gen = torch.Generator().manual_seed(2)
    for n in FUSED_POINTS:
        x = torch.randn(16, n, 10, generator=gen).cuda()
        row = {"case": f"fused n={n}"}
        for backend, column in (("triton", "triton"), ("torch", "torch"), ("native", "host")):
            row[column] = _attempt(lambda: timed(lambda: h0_persistence(x, "l1", backend=backend), 20, warmup=2,
                                                 cuda=True)[0])
        print(f"{row['case']:<28} {_cell(row['triton']):>10} {_cell(row['torch']):>10} {_cell(row['host']):>10}",
              flush=True)
        results.append(row)


def schedule_cases(cuda: bool, results: list) -> None:
    """Where the neighbour lists start to pay (boruvka.LIST_MIN_POINTS) and what the l2 screening
    saves: forward only, backend "torch" on the GPU (or on this CPU without one)."""
    device = "cuda" if cuda else "cpu"
    print(f"\n{'Borůvka schedules (' + device + '), d=160':<28} {'fixed':>10} {'lists':>10} {'lists, cdist l2':>16}")
    gen = torch.Generator().manual_seed(1)
    for n in (SCHEDULE_POINTS if cuda else SCHEDULE_POINTS[:2]):
        for metric in ("l1", "l2"):
            x = torch.randn(n, D, generator=gen).to(device)
            row = {"case": f"schedule n={n} {metric} {device}"}
            for name, lists, screen in (("fixed", False, True), ("lists", True, True), ("lists_cdist", True, False)):
                if name == "lists_cdist" and metric != "l2":
                    continue
                with _schedule(lists, screen):
                    row[name] = timed(lambda: h0_persistence(x, metric, backend="torch"), 3, cuda=cuda)[0]
            print(f"{row['case']:<28} {_ms(row['fixed']):>10} {_ms(row['lists']):>10} {_ms(row.get('lists_cdist')):>16}",
                  flush=True)
            results.append(row)


def _fastest_loss(results: list, compiled: bool) -> str | None:
    """The H0 engine whose connectivity loss (the first case, the paper's) ran fastest, eager or
    compiled: "torch" (Borůvka), "native" (the host tree) or "triton"; None when none ran."""
    row = next((r for r in results if r["case"].startswith("loss ")), {})
    columns = ((("torch", "corel_gpu_compiled"), ("triton", "corel_triton_compiled")) if compiled else
               (("torch", "corel_gpu"), ("native", "corel_host"), ("triton", "corel_triton")))
    times = [(row.get(c), b) for b, c in columns if isinstance(row.get(c), float)]
    return min(times)[1] if times else None


def _train_epochs(results: list, data_dir: str, backend: str, compiled: bool, images: int) -> None:
    """Two epochs of ``corel train --accelerator gpu`` on ``backend``, the loss compiled or not."""
    start = time.perf_counter()
    out = Path(data_dir) / f"run-{backend}-{compiled}"
    done = subprocess.run([sys.executable, "-m", "corel.experiments.cli", "train", "--data", "npz", "--data-dir",
                           data_dir, "--epochs", "2", "--accelerator", "gpu", "--devices", "1", "--h0-backend", backend,
                           "--out", str(out), "--quiet"] + (["--compile-loss"] if compiled else []),
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    name = f"--h0-backend {backend}" + (" --compile-loss" if compiled else "")
    if done.returncode != 0:
        print(f"corel train --accelerator gpu {name} failed:\n{done.stderr[-2000:]}", flush=True)
        results.append({"case": f"corel train epoch {name}", "error": done.stderr[-2000:]})
        return
    rows = (out / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    epochs = [float(r.split(",")[header.index("epoch_seconds")]) for r in rows[1:]]
    print(f"corel train --accelerator gpu {name}, {images} images of 3x32x32, lambda 20: epoch 1 "
          f"{epochs[0]:.1f} s, epoch 2 {epochs[1]:.1f} s (whole command {wall:.0f} s); 50 epochs ~ "
          f"{50 * epochs[1] / 60:.1f} min", flush=True)
    results.append({"case": f"corel train epoch {name}", "h0_backend": backend, "compile_loss": compiled,
                    "epoch_seconds": epochs, "command_seconds": wall})


def training_cases(results: list, images: int) -> None:
    """The autoencoder's step at lambda = 20 on each engine (eager and compiled) and 0, then two
    epochs through ``corel train`` on the fastest eager and the fastest compiled loss."""
    t0 = step_time(0.0, True, 50, "cuda")
    for backend, compile_mode in (("torch", None), ("native", None), ("triton", None), ("torch", "reduce-overhead"),
                                  ("triton", "reduce-overhead")):
        name = backend + (" compiled" if compile_mode else "")
        t20 = _attempt(step_time, 20.0, True, 50, "cuda", backend, compile_mode)
        if isinstance(t20, str):
            print(f"\nautoencoder step, backend {name}: {t20}", flush=True)
            results.append({"case": f"training step {name}", "error": t20})
            continue
        share = (t20 - t0) / t20
        print(f"\nautoencoder step, batch 100, backend {name}: lambda=20 {t20 * 1e3:.2f} ms, lambda=0 "
              f"{t0 * 1e3:.2f} ms: persistence is {100 * share:.0f}% of the step", flush=True)
        results.append({"case": f"training step {name}", "lambda20": t20, "lambda0": t0, "persistence_share": share})
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        np.savez(Path(tmp) / "data.npz", x_train=rng.integers(0, 256, (images, 3, 32, 32), dtype=np.uint8),
                 y_train=np.zeros(images, np.int64), x_test=np.zeros((10, 3, 32, 32), np.uint8),
                 y_test=np.zeros(10, np.int64))
        for compiled in (False, True):
            backend = _fastest_loss(results, compiled)
            if backend is not None:
                _train_epochs(results, tmp, backend, compiled, images)


class _Results(list):
    """The rows so far, written to ``path`` as JSON after every one (when given), so a run cut
    short keeps what it measured."""

    def __init__(self, path: Path | None, device: str):
        super().__init__()
        self.path, self.device = path, device

    def append(self, row: dict) -> None:
        super().append(row)
        if self.path is not None:  # beside, then replaced: an interrupt never leaves half a file
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(self.path.name + ".partial")
            partial.write_text(json.dumps({"device": self.device, "torch": torch.__version__, "results": self},
                                          indent=2, default=str))
            os.replace(partial, self.path)


def _section(results: list, name: str, fn, *args) -> None:
    """fn(*args); an error is printed and kept as a row, and the sections after it still run (a
    lent device's minutes are few: one failure must not cost the rest of the call)."""
    try:
        fn(*args)
    except Exception:  # noqa: BLE001
        trace = traceback.format_exc()
        print(f"\n{name} failed:\n{trace[-3000:]}", flush=True)
        results.append({"case": name, "error": trace[-3000:]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=270.0, help="seconds for the whole script")
    parser.add_argument("--no-torchph", action="store_true")
    parser.add_argument("--epoch-images", type=int, default=50000)
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the results as JSON here (after every row, so a timeout keeps them)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--cloud-min", type=int, default=0, help="single clouds of at least this many points only")
    parser.add_argument("--cloud-max", type=int, default=None, help="single clouds of at most this many points only")
    args = parser.parse_args()
    parts = args.parts.split(",")
    if not set(parts) <= set(PARTS):
        parser.error(f"--parts takes {', '.join(PARTS)}, got {args.parts!r}")
    clouds = [(n, metric) for n, metric in CLOUD_CASES
              if n >= args.cloud_min and (args.cloud_max is None or n <= args.cloud_max)]
    start = time.perf_counter()
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else "no CUDA device (CPU columns only)"
    print(f"{device}; torch {torch.__version__}; {os.cpu_count()} CPU cores, {torch.get_num_threads()} threads")
    pershom = None if args.no_torchph else _torchph()
    results = _Results(args.out, device)
    left = lambda: args.budget - (time.perf_counter() - start)  # noqa: E731
    # the targets first (the loss, the training step and epochs, the clouds), then what places the
    # engines' thresholds, each while the budget lasts
    if "loss" in parts:
        _section(results, "loss", loss_cases, pershom, cuda, results)
    if cuda and "training" in parts:
        _section(results, "training", training_cases, results, args.epoch_images)
    if "clouds" in parts:
        _section(results, "clouds", cloud_cases, pershom, cuda, args.budget - (45 if cuda else 0), start, results,
                 clouds)
    for name, part, seconds in (("unchecked", unchecked_loss_cases, 15), ("fused", fused_cases, 15),
                                ("schedules", schedule_cases, 20)):
        if (part is not schedule_cases and not cuda) or name not in parts:
            continue
        if left() < seconds:
            print(f"\n{name}: skipped, {left():.0f} s of the budget left")
            continue
        _section(results, name, *((part, cuda, results) if part is schedule_cases else (part, results)))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
