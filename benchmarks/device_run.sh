#!/usr/bin/env bash
# The prepared calls for a lent GPU (the device tool), one part per call:
#   here:    mkdir -p .anchors && cp -r ../shared/anchors/torchph/torchph .anchors/  (optional: torchph's columns)
#   device:  run(command="bash benchmarks/device_run.sh all", carry=[".anchors"], timeout_s=450)
#   or, in two calls: ... bench (timeout_s=420), then ... tests (timeout_s=240); after all or bench,
#   arguments for bench_gpu.py (a rerun of some parts: --parts loss,training --cloud-min 20000)
# bench: builds the compiled kernel, runs bench_gpu.py (its own budget; interrupted at 330 s, its
#        JSON written after every row).  tests: the CUDA-only tests and the Triton kernels compiled
#        for real (100 s), then the other topology and training tests (50 s), each interrupted
#        with pytest's summary.
# all: torchph built in the background from the start, the CUDA-only tests (120 s), then the bench
#      on a shorter budget (230 s): about 9 of a session's 15 device minutes with the machine's
#      start, leaving enough for one more, short call (a fix checked, a part rerun).
# Everything lands in $OUT (or runs/device here): the card, the bench's text and JSON, the tests' summary.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/device}
PART=${1:-}
shift || true  # the rest go to bench_gpu.py (all, bench): e.g. --parts loss,training --cloud-min 20000
if [ "$PART" != bench ] && [ "$PART" != tests ] && [ "$PART" != all ]; then
    echo "usage: bash benchmarks/device_run.sh bench|tests|all" >&2
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
        "$@" 2>&1 | tee "$OUT/bench_gpu.txt"
fi
GPU_FIRST="cuda or gpu or test_fused or on_its_device"
if [ "$PART" = all ]; then
    # torchph's CUDA extension compiles (minutes of nvcc) while the tests run; the bench's import
    # waits for the build's lock
    (PYTHONPATH=.anchors MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0 python3 -c "from torchph import pershom" \
        > "$OUT/torchph_build.txt" 2>&1 &)
    PYTHONPATH=src timeout -s INT -k 15 120 python3 -m pytest -q -p no:cacheprovider -rfE -k "$GPU_FIRST" \
        tests/topology/test_h0.py tests/topology/test_fused.py tests/experiments/test_training.py \
        tests/detection/test_backbone.py::test_a_loaded_detector_encodes_on_its_device \
        tests/detection/test_detector.py::test_codes_on_the_gpu > "$OUT/pytest_gpu.txt" 2>&1
    tail -25 "$OUT/pytest_gpu.txt"
    PYTHONPATH=src:benchmarks timeout -s INT -k 15 270 python3 benchmarks/bench_gpu.py --budget 230 --out "$OUT/bench_gpu.json" \
        "$@" 2>&1 | tee "$OUT/bench_gpu.txt"
fi
if [ "$PART" = tests ]; then
    # first what only a GPU can check (CUDA-only tests, the Triton kernels compiled for real), then
    # the rest of the topology and training tests in the time left.  Oracles not installed there
    # (gudhi, giotto-ph, ripser) make their tests skip or fail to collect; the summary says which.
    PYTHONPATH=src timeout -s INT -k 15 100 python3 -m pytest -q -p no:cacheprovider -rfE -k "$GPU_FIRST" \
        tests/topology/test_h0.py tests/topology/test_fused.py tests/experiments/test_training.py > "$OUT/pytest_gpu.txt" 2>&1
    tail -15 "$OUT/pytest_gpu.txt"
    PYTHONPATH=src timeout -s INT -k 15 50 python3 -m pytest -q -p no:cacheprovider --continue-on-collection-errors -rfE \
        -k "not ($GPU_FIRST)" tests/topology tests/experiments/test_training.py > "$OUT/pytest_rest.txt" 2>&1
    tail -15 "$OUT/pytest_rest.txt"
fi
