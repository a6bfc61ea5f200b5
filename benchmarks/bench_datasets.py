"""Loading speed of corel.datasets: decoding ImageNet-sized JPEGs (cold) vs. the decoded cache (warm),
and CIFAR-10 from the shared .npz copy.

    python benchmarks/bench_datasets.py [--images 400] [--shared-data ../shared/data]

The JPEGs are synthetic: 500x375 pixels (about ImageNet's mean size), smooth colour fields plus
noise, quality 90, in an imagefolder layout with 4 classes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from corel.experiments.datasets import load_dataset


def _write_jpegs(root: Path, count: int, rng: np.random.Generator) -> None:
    for i in range(count):
        split = "val" if i % 5 == 0 else "train"
        folder = root / split / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        field = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((500, 375), Image.BICUBIC)
        noisy = np.asarray(field, np.int16) + rng.integers(-12, 13, (375, 500, 3))
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--shared-data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        _write_jpegs(root, args.images, np.random.default_rng(0))
        os.environ["COREL_CACHE"] = str(Path(tmp) / "cache")
        cold, data = _timed(lambda: load_dataset("imagefolder", root, image_size=args.image_size))
        warm, _ = _timed(lambda: load_dataset("imagefolder", root, image_size=args.image_size))
        n = len(data.x_train) + len(data.x_test)
        print(f"imagefolder, {n} JPEGs 500x375 -> {args.image_size}px: cold {cold:.2f} s ({n / cold:.0f} img/s, "
              f"decode + cache write), warm {warm:.3f} s (cache read)")

    npz = args.shared_data / "cifar10.npz"
    if npz.is_file():
        seconds, data = _timed(lambda: load_dataset("cifar10", args.shared_data, download=False))
        print(f"cifar10 from {npz} ({npz.stat().st_size / 1e6:.0f} MB compressed): {seconds:.2f} s, {data}")


if __name__ == "__main__":
    main()
