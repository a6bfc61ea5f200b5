"""The timing helper every benchmark script uses."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 1, cuda: bool = False) -> tuple[float, Any]:
    """(median wall time of ``fn()`` in seconds over ``repeats`` runs, the last result), after
    ``warmup`` runs (lazy imports, allocators, thread pools); with ``cuda`` every run ends with a
    device synchronisation, so the time covers the work and not only its launch."""
    for _ in range(warmup):
        fn()
    times, result = [], None
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result
