"""Argument checks shared by every layer (integers and numbers here; metrics in topology.distances)."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import torch


def check_ints(minimum: int, **params: Any) -> None:
    """ValueError naming the first of ``params`` that is not an int >= ``minimum`` (numpy integers
    pass; bools, floats and text do not, which crashed later in range() or a comparison)."""
    kind = {0: "a non-negative int", 1: "a positive int"}.get(minimum, f"an int >= {minimum}")
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
            raise ValueError(f"{name} must be {kind}, got {value!r}")


def plain_number(value: Any) -> Any:
    """A 0-d real tensor as its Python number (for parameters users pass as tensors); anything
    else as it is."""
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_complex():
        return value.item()
    return value


def check_number(value: Any, name: str, *, strict: bool = False) -> float:
    """``value`` as a float: a finite real number >= 0 (> 0 with ``strict``), numpy numbers and 0-d
    tensors included; ValueError naming ``name`` otherwise (bools, text, NaN and inf too)."""
    value = plain_number(value)
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) \
            or not (value > 0 if strict else value >= 0):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} 0, got {value!r}")
    return float(value)
