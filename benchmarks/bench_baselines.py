"""CPU cost of the baseline detectors: one fit on n class samples, scoring, AUROC on one class.

    nice -n 19 .venv/bin/python benchmarks/bench_baselines.py --data ../shared/data/cifar10.npz \
        --methods ocsvm_cae,deep_svdd --settings default --threads 1 --out runs/bench_baselines.jsonl

Fits each method on n random training images of class --cls (the protocol's draw 0), scores
--test-subset random test images (the time for the whole test split is extrapolated linearly) and
appends one JSON line per method to --out: fit and scoring seconds, AUROC x 100 on the subset.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from corel.detection.baselines import BASELINES, SMALL_SETTINGS
from corel.experiments.datasets import load_dataset
from corel.experiments.protocol import draw_indices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a CIFAR-like .npz (x_train, y_train, x_test, y_test)")
    parser.add_argument("--methods", default=",".join(BASELINES))
    parser.add_argument("--settings", choices=("default", "small"), default="default")
    parser.add_argument("--cls", type=int, default=0)
    parser.add_argument("-n", type=int, default=120)
    parser.add_argument("--test-subset", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_dataset("npz", args.data)
    train = data.x_train[draw_indices(data.y_train, args.cls, args.n, draw=0, seed=args.seed)]
    rng = np.random.default_rng(args.seed)
    subset = np.sort(rng.choice(len(data.x_test), size=min(args.test_subset, len(data.x_test)), replace=False))
    x_test, positives = data.x_test[subset], data.y_test[subset] == args.cls
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.methods.split(","):
        params = SMALL_SETTINGS[name] if args.settings == "small" else {}
        detector = BASELINES[name](**params, seed=args.seed)
        start = time.perf_counter()
        detector.fit(train)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        scores = detector.score_samples(x_test)
        score_s = time.perf_counter() - start
        row = {
            "method": name, "settings": args.settings, "params": params, "n": args.n, "class": args.cls,
            "threads": args.threads, "fit_s": round(fit_s, 2), "score_s": round(score_s, 2),
            "scored": len(x_test), "score_full_test_s": round(score_s * len(data.x_test) / len(x_test), 1),
            "auroc_subset": round(100 * roc_auc_score(positives, scores), 2),
        }
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
