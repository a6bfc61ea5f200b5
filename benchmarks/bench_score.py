"""Scoring image files with the shipped backbone: decode + encode + count, and its memory.

    python benchmarks/bench_score.py [--images 10000] [--chunk 1000] [--data-dir ../shared/data]

Writes --images PNG files of 32x32 (CIFAR-10 test images when --data-dir holds cifar10.npz, else
random images) into a temporary folder, fits a detector on 120 of them, then times
``corel.experiments.novelty.score`` on the whole folder (what ``corel score`` does, without the
interpreter's start and the CSV), in a fresh process each for N and 3N images so the peak
memory of the two can be compared: with streaming it must not grow with the folder.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

CHILD = """
import json, resource, sys, time
from corel.experiments.novelty import NoveltyModel, score
model = NoveltyModel.load(sys.argv[1])
start = time.perf_counter()
scored = score(model, sys.argv[2], chunk=int(sys.argv[3]), progress=False)
seconds = time.perf_counter() - start
print(json.dumps({"images": len(scored.scores), "seconds": seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _write_images(folder: Path, count: int, data_dir: Path | None) -> None:
    folder.mkdir(parents=True)
    source = data_dir / "cifar10.npz" if data_dir is not None else None
    if source is not None and source.is_file():
        with np.load(source) as f:
            pixels = f["x_test"]
        pixels = np.concatenate([pixels] * (count // len(pixels) + 1))[:count]
    else:
        pixels = np.random.default_rng(0).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{i:06d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    from corel.experiments.novelty import fit

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = {}
        for count in (args.images, 3 * args.images):
            folder = tmp / f"images{count}"
            start = time.perf_counter()
            _write_images(folder, count, args.data_dir)
            print(f"wrote {count} PNG files in {time.perf_counter() - start:.0f} s", flush=True)
            if count == args.images:
                fit_folder = tmp / "fit"
                fit_folder.mkdir()
                for path in sorted(folder.iterdir())[:120]:
                    (fit_folder / path.name).write_bytes(path.read_bytes())
                model, _ = fit(fit_folder)
                model.save(tmp / "model.corel")
            done = subprocess.run([sys.executable, "-c", CHILD, str(tmp / "model.corel"), str(folder), str(args.chunk)],
                                  capture_output=True, text=True, check=True)
            results[count] = json.loads(done.stdout.strip().splitlines()[-1])
            r = results[count]
            print(f"{count:>7} images: {r['seconds']:.2f} s ({count / r['seconds']:.0f} images/s, decode + encode + "
                  f"count), peak memory {r['peak_rss_mb']:.0f} MB", flush=True)
        growth = results[3 * args.images]["peak_rss_mb"] - results[args.images]["peak_rss_mb"]
        print(f"peak memory grows by {growth:.0f} MB from {args.images} to {3 * args.images} images "
              f"(chunks of {args.chunk}; this parent process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB)")


if __name__ == "__main__":
    main()
