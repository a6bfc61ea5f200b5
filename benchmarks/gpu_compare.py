"""The CIFAR-10 comparison at the baselines' published sizes, prepared for one call on a lent GPU.

The device gets the checkout only (64 MiB carried at most), and CIFAR-10 is 170 MB.  The protocol
only ever reads the training images its draws pick, so:

    python benchmarks/gpu_compare.py prepare --data-dir ../shared/data     # here: writes .gpu/cifar10.npz
    # on the device, one call (carry [".gpu"]):
    python3 setup.py -q build_ext --inplace && PYTHONPATH=src python3 benchmarks/gpu_compare.py run --out $OUT/compare

``prepare`` keeps all 50,000 labels (so every draw is the same as on the full split) and the whole
test split, and zeroes the training images no draw of --n, --draws, --seed picks, which compress to
nothing (about 40 MB in all).  ``run`` is ``corel compare --device cuda`` of corel (the shipped
backbone) and the five baselines at their published settings on those draws and the whole test
split; every finished cell is kept under --out, so a second call continues.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".gpu"
METHODS = "corel,ocsvm_cae,deep_svdd,dagmm,dsebm,geom"


def prepare(data_dir: Path, n: int, draws: int, seed: int) -> None:
    from corel.experiments.datasets import load_dataset
    from corel.experiments.protocol import draw_indices

    data = load_dataset("cifar10", data_dir, download=False)
    keep = np.zeros(len(data.x_train), dtype=bool)
    for c in range(data.num_classes):
        for r in range(draws):
            keep[draw_indices(data.y_train, c, n, r, seed)] = True
    x_train = np.where(keep[:, None, None, None], data.x_train, 0).astype(np.uint8)
    DATA.mkdir(exist_ok=True)
    np.savez_compressed(DATA / "cifar10.npz", x_train=x_train, y_train=data.y_train, x_test=data.x_test,
                        y_test=data.y_test, class_names=np.array(data.class_names))
    size = (DATA / "cifar10.npz").stat().st_size / 2**20
    print(f"{DATA / 'cifar10.npz'}: {keep.sum()} of {len(keep)} training images kept, {size:.1f} MiB")


def run(out: Path, n: int, draws: int, seed: int, methods: str) -> int:
    command = [sys.executable, "-m", "corel.experiments.cli", "compare", "--data", "cifar10", "--data-dir", str(DATA),
               "--no-download", "--methods", methods, "--backbone", "cifar10", "-n", str(n), "--draws", str(draws),
               "--seed", str(seed), "--device", "cuda", "--out", str(out), "--quiet"]
    print(" ".join(command), flush=True)
    return subprocess.run(command).returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("prepare", "run"))
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_compare"))
    parser.add_argument("-n", type=int, default=120)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=METHODS)
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args.data_dir, args.n, args.draws, args.seed)
    else:
        sys.exit(run(args.out, args.n, args.draws, args.seed, args.methods))


if __name__ == "__main__":
    main()
