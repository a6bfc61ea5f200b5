#!/usr/bin/env bash
# The prepared calls for a lent GPU (the device tool), one part per call:
#   here:    mkdir -p .anchors && cp -r ../shared/anchors/torchph .anchors/   (optional: torchph's columns)
#   device:  run(command="bash benchmarks/device_run.sh bench", carry=[".anchors"], timeout_s=420)
#            run(command="bash benchmarks/device_run.sh tests", timeout_s=240)
# bench: builds the compiled kernel, runs bench_gpu.py (its own budget; interrupted at 330 s, its
#        JSON written after every row).  tests: the CUDA-only tests and the Triton kernels compiled
#        for real (100 s), then the other topology and training tests (50 s), each interrupted
#        with pytest's summary.
# Both together take about 12 of a session's 15 device minutes with the machine's start: a part
# that fails early can be rerun, a whole bench cannot.
# Everything lands in $OUT (or runs/device here): the card, the bench's text and JSON, the tests' summary.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/device}
PART=${1:-}
if [ "$PART" != bench ] && [ "$PART" != tests ]; then
    echo "usage: bash benchmarks/device_run.sh bench|tests" >&2
    exit 2
fi
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
# SIGINT, not SIGTERM: Python and pytest then stop with what they have (rows, a summary); a
# process that ignores it (inside a native compile) is killed 15 s later
if [ "$PART" = bench ]; then
    PYTHONPATH=src:benchmarks timeout -s INT -k 15 330 python3 benchmarks/bench_gpu.py --budget 270 --out "$OUT/bench_gpu.json" \
        2>&1 | tee "$OUT/bench_gpu.txt"
fi
if [ "$PART" = tests ]; then
    # first what only a GPU can check (CUDA-only tests, the Triton kernels compiled for real), then
    # the rest of the topology and training tests in the time left.  Oracles not installed there
    # (gudhi, giotto-ph, ripser) make their tests skip or fail to collect; the summary says which.
    GPU_FIRST="cuda or gpu or test_fused"
    PYTHONPATH=src timeout -s INT -k 15 100 python3 -m pytest -q -p no:cacheprovider -rfE -k "$GPU_FIRST" \
        tests/topology/test_h0.py tests/topology/test_fused.py tests/experiments/test_training.py > "$OUT/pytest_gpu.txt" 2>&1
    tail -15 "$OUT/pytest_gpu.txt"
    PYTHONPATH=src timeout -s INT -k 15 50 python3 -m pytest -q -p no:cacheprovider --continue-on-collection-errors -rfE \
        -k "not ($GPU_FIRST)" tests/topology tests/experiments/test_training.py > "$OUT/pytest_rest.txt" 2>&1
    tail -15 "$OUT/pytest_rest.txt"
fi
