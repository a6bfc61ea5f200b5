#!/usr/bin/env bash
# The one prepared call for a lent GPU (the device tool), about 9 minutes at most:
#   here:      mkdir -p .anchors && cp -r ../shared/anchors/torchph .anchors/   (optional: torchph's columns)
#   device:    run(command="bash benchmarks/device_run.sh", carry=[".anchors"], timeout_s=600)
# Builds the compiled kernel, runs bench_gpu.py (its own budget, capped at 330 s), then the test
# suite on the GPU (180 s at most: the CUDA-only tests and the fused kernel compiled for real).
# Everything lands in $OUT (or runs/device here): the bench's text and JSON, the tests' summary.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/device}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.csv" 2>&1
python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda)" >> "$OUT/gpu.csv" 2>&1
python3 -c "import triton; print('triton', triton.__version__)" >> "$OUT/gpu.csv" 2>&1
cat "$OUT/gpu.csv"
if ! python3 setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1; then
    tail -20 "$OUT/build.log"
    exit 1
fi
PYTHONPATH=src:benchmarks timeout 330 python3 benchmarks/bench_gpu.py --budget 270 --out "$OUT/bench_gpu.json" \
    2>&1 | tee "$OUT/bench_gpu.txt"
# Tests whose oracles (gudhi, giotto-ph, ripser) are not installed there skip or fail to collect;
# the summary says which.
PYTHONPATH=src timeout 180 python3 -m pytest -q -p no:cacheprovider --continue-on-collection-errors -rfE \
    > "$OUT/pytest.txt" 2>&1
tail -25 "$OUT/pytest.txt"
