"""Argument checks shared by every layer (integers here; lengths and metrics in topology.distances)."""

from __future__ import annotations

from numbers import Integral
from typing import Any


def check_ints(minimum: int, **params: Any) -> None:
    """ValueError naming the first of ``params`` that is not an int >= ``minimum`` (numpy integers
    pass; bools, floats and text do not, which crashed later in range() or a comparison)."""
    kind = {0: "a non-negative int", 1: "a positive int"}.get(minimum, f"an int >= {minimum}")
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
            raise ValueError(f"{name} must be {kind}, got {value!r}")
