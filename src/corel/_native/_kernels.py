"""The only caller of the compiled kernels (``corel._native._ext``).

It owns what the C side needs to know: the metric codes, the floating types (float64 stays
float64, every other dtype runs in float32) and contiguous buffers.  Tensors in, tensors out, CPU.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from corel._native import _ext

# metric codes of kernels.c
_L1, _L2, _LINF, _P, _MATRIX = 0, 1, 2, 3, 4
_CODES = {1.0: _L1, 2.0: _L2, math.inf: _LINF}


def _kernel_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _buffer(x: Tensor, dtype: torch.dtype) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to(device="cpu", dtype=dtype).numpy())


def mst_edges(data: Tensor, p: float | None) -> Tensor | None:
    """Minimum spanning tree of each cloud: ``data`` (B, n, d) points under the l_p metric, or
    (B, n, n) distance matrices when ``p`` is None -> edges (B, n-1, 2) int64, i < j; None when
    ``data`` holds a NaN or inf (checked while it is read)."""
    b, n, d = data.shape
    dtype = _kernel_dtype(data)
    arr = _buffer(data, dtype)
    code = _MATRIX if p is None else _CODES.get(p, _P)
    edges = np.empty((b, n - 1, 2), dtype=np.int64)
    if not _ext.mst_edges(arr, edges, b, n, d, code, 0.0 if p is None else p, dtype == torch.float64):
        return None
    return torch.from_numpy(edges)


def count_within(queries: Tensor, codes: Tensor, radius: float, p: float) -> Tensor:
    """Per query (M, K, d), the number of codes (K, n, d) within ``radius`` under l_p in its own
    branch k, summed over the K branches -> (M,) int64."""
    m, k, d = queries.shape
    dtype = _kernel_dtype(queries)
    counts = np.empty(m, dtype=np.int64)
    _ext.count_within(_buffer(queries, dtype), _buffer(codes, dtype), counts, m, k, codes.shape[1], d,
                      _CODES.get(p, _P), p, float(radius), dtype == torch.float64)
    return torch.from_numpy(counts)
