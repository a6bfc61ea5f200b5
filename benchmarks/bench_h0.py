"""0-dim Vietoris-Rips persistence: corel next to torch.cdist (the floor) and its peers, in one run.

Same inputs for every engine (standard normal clouds, float32 for torch, float64 where a peer needs
it).  Prints the median wall time of each and the ratios corel / cdist and peer / corel; corel is
the default CPU engine (the compiled Prim), "torch" corel's device-agnostic Borůvka on this CPU.
    python benchmarks/bench_h0.py [--sizes 100,1000,5000] [--repeats 5] [--large]
--large adds one 50,000 x 160 cloud (corel only: no n x n matrix fits comfortably).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial.distance import cdist

from corel import ConnectivityLoss, h0_persistence
from timing import timed

SCIPY_METRIC = {"l1": "cityblock", "l2": "euclidean"}
# peers whose cost explodes are skipped beyond these sizes (their n=1000 time already shows the gap)
PEER_MAX_N = {"gudhi": 1000, "scipy-mst": 5000, "ripser": 5000, "giotto-ph": 5000}


def peers(x: np.ndarray, metric: str) -> dict:
    out = {"scipy-mst": lambda: minimum_spanning_tree(cdist(x, x, SCIPY_METRIC[metric]))}
    try:
        from ripser import ripser

        warnings.filterwarnings("ignore", message="The input point cloud has more columns than rows")
        out["ripser"] = lambda: ripser(x, maxdim=0, metric=SCIPY_METRIC[metric])
    except ImportError:
        pass
    try:
        from gph import ripser_parallel

        out["giotto-ph"] = lambda: ripser_parallel(x, maxdim=0, metric="manhattan" if metric == "l1" else "euclidean")
    except ImportError:
        pass
    try:
        import gudhi

        def run_gudhi():
            dist = cdist(x, x, SCIPY_METRIC[metric])
            gudhi.RipsComplex(distance_matrix=dist).create_simplex_tree(max_dimension=1).persistence()

        out["gudhi"] = run_gudhi
    except ImportError:
        pass
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--dims", default="10,160")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--large", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'n':>6} {'d':>4} {'metric':>6} {'corel ms':>9} {'cdist ms':>9} {'corel/cdist':>11} {'torch ms':>9} {'torch/cdist':>11}  peers (ms, peer/corel)")
    gen = torch.Generator().manual_seed(0)
    for n in map(int, args.sizes.split(",")):
        for d in map(int, args.dims.split(",")):
            x = torch.randn(n, d, generator=gen)
            for metric in ("l1", "l2"):
                p = 1.0 if metric == "l1" else 2.0
                t_corel, _ = timed(lambda: h0_persistence(x, metric), args.repeats)
                t_cdist, _ = timed(lambda: torch.cdist(x, x, p=p), args.repeats)
                t_torch, _ = timed(lambda: h0_persistence(x, metric, backend="torch"), args.repeats)
                cells = []
                for name, fn in peers(x.double().numpy(), metric).items():
                    if n > PEER_MAX_N[name]:
                        continue
                    t, _ = timed(fn, 1 if n >= 5000 else args.repeats)
                    cells.append(f"{name} {t * 1e3:.1f} ({t / t_corel:.0f}x)")
                print(f"{n:>6} {d:>4} {metric:>6} {t_corel * 1e3:>9.2f} {t_cdist * 1e3:>9.2f} "
                      f"{t_corel / t_cdist:>11.2f} {t_torch * 1e3:>9.2f} {t_torch / t_cdist:>11.2f}  "
                      + ", ".join(cells), flush=True)

    z = torch.randn(100, 160, generator=gen, requires_grad=True)
    loss = ConnectivityLoss(eta=2.0, branches=16)

    def forward_backward():
        z.grad = None
        loss(z).backward()

    t_fb, _ = timed(forward_backward, 200)
    t_f, _ = timed(lambda: loss(z.detach()), 200)
    print(f"connectivity loss, 16 branches x 100 codes x 10 dims: forward {t_f * 1e3:.3f} ms, "
          f"forward+backward {t_fb * 1e3:.3f} ms")
    if args.large:
        x = torch.randn(50_000, 160, generator=gen)
        start = time.perf_counter()
        h0_persistence(x, "l1")
        print(f"50,000 x 160 (l1): {time.perf_counter() - start:.1f} s, memory O(n d)")


if __name__ == "__main__":
    main()
