"""Speed of differentiable H1: corel (giotto-ph + gather + backward) next to ripser and gudhi.

    python benchmarks/bench_h1.py [--slow] [--repeats 3]

Clouds: n standard normal points in R^d (seed 0), Euclidean metric, homology up to dimension 1,
no threshold.  Columns (median seconds over the repeats):
  corel     rips_persistence(points, "l2", 1) with autograd, then backward of the H1 total
            persistence: distance matrix, exact H0, giotto-ph on one thread, gather, backward;
  giotto    giotto-ph's ripser_parallel alone on the precomputed matrix (generators, 1 thread);
  ripser    ripser.ripser(points, maxdim=1) (the ripser package, computes its own distances);
  gudhi     gudhi Rips complex up to edges, collapse_edges(), expansion(2), persistence() (gudhi's
            recommended path; the plain complex of all triangles does not fit at n = 1000).
The ratios are corel / ripser and corel / gudhi; the H1 class counts of all three are compared.
--slow adds n = 1000 (minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import math
import warnings

import gudhi
import numpy as np
import ripser
import torch
from gph import ripser_parallel

from corel import rips_persistence
from timing import timed


def _corel(x: np.ndarray) -> int:
    points = torch.from_numpy(x).requires_grad_()
    h1 = rips_persistence(points, "l2", 1)[1]
    (h1.pairs[:, 1] - h1.pairs[:, 0]).sum().backward()
    return len(h1.pairs)


def _giotto(x: np.ndarray) -> int:
    dist = torch.cdist(torch.from_numpy(x), torch.from_numpy(x)).numpy()
    out = ripser_parallel(dist, maxdim=1, metric="precomputed", n_threads=1, return_generators=True)
    return len(out["dgms"][1])


def _ripser(x: np.ndarray) -> int:
    return len(ripser.ripser(x, maxdim=1)["dgms"][1])


def _gudhi(x: np.ndarray) -> int:
    tree = gudhi.RipsComplex(points=x).create_simplex_tree(max_dimension=1)
    tree.collapse_edges()
    tree.expansion(2)
    pairs = tree.persistence(homology_coeff_field=2)
    return sum(1 for dim, (_, death) in pairs if dim == 1 and math.isfinite(death))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", action="store_true", help="include n = 1000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="The input point cloud has more columns than rows")
    sizes = [100, 500] + ([1000] if args.slow else [])
    print(f"{'n':>5} {'d':>4} {'H1':>5} {'corel':>8} {'giotto':>8} {'ripser':>8} {'gudhi':>8} "
          f"{'corel/ripser':>12} {'corel/gudhi':>11}")
    for n in sizes:
        for d in (10, 160):
            x = np.random.default_rng(0).normal(size=(n, d))
            repeats = args.repeats if n < 1000 else 1
            _corel(x)  # warm-up: imports, first-call allocations
            timings, counts = {}, {}
            for name, fn in [("corel", _corel), ("giotto", _giotto), ("ripser", _ripser), ("gudhi", _gudhi)]:
                timings[name], counts[name] = timed(lambda: fn(x), repeats, warmup=0)
            agree = len(set(counts.values())) == 1
            print(f"{n:5d} {d:4d} {counts['corel']:5d} {timings['corel']:8.3f} {timings['giotto']:8.3f} "
                  f"{timings['ripser']:8.3f} {timings['gudhi']:8.3f} "
                  f"{timings['corel'] / timings['ripser']:12.2f} {timings['corel'] / timings['gudhi']:11.2f}"
                  + ("" if agree else f"  H1 counts differ: {counts}"), flush=True)


if __name__ == "__main__":
    main()
