#!/usr/bin/env bash
# The prepared calls for a lent GPU (the device tool); each part fits one call with time to spare:
#   here:    mkdir -p .anchors && cp -r ../shared/anchors/torchph .anchors/   (optional: torchph's columns)
#   device:  run(command="bash benchmarks/device_run.sh bench", carry=[".anchors"], timeout_s=420)
#            run(command="bash benchmarks/device_run.sh tests", timeout_s=240)
#   (no argument: both, about 8 minutes at most)
# bench: builds the compiled kernel, runs bench_gpu.py (its own budget; killed at 330 s, its JSON
#        is written after every section).  tests: the GPU-relevant tests (CUDA-only ones, the Triton
#        kernels compiled for real, training), 180 s at most.
# Everything lands in $OUT (or runs/device here): the card, the bench's text and JSON, the tests' summary.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/device}
PART=${1:-all}
mkdir -p "$OUT"
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)" 2>&1
    python3 -c "import triton; print('triton', triton.__version__)" 2>&1
} > "$OUT/gpu.txt"
cat "$OUT/gpu.txt"
if ! python3 setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1; then
    tail -20 "$OUT/build.log"
    exit 1
fi
if [ "$PART" = all ] || [ "$PART" = bench ]; then
    PYTHONPATH=src:benchmarks timeout 330 python3 benchmarks/bench_gpu.py --budget 270 --out "$OUT/bench_gpu.json" \
        2>&1 | tee "$OUT/bench_gpu.txt"
fi
if [ "$PART" = all ] || [ "$PART" = tests ]; then
    # oracles that are not installed there (gudhi, giotto-ph, ripser) make their tests skip or fail
    # to collect; the summary says which
    PYTHONPATH=src timeout 180 python3 -m pytest -q -p no:cacheprovider --continue-on-collection-errors -rfE \
        tests/topology tests/experiments/test_training.py > "$OUT/pytest.txt" 2>&1
    tail -25 "$OUT/pytest.txt"
fi
