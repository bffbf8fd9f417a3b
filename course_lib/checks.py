"""Argument checks shared by the whole package: bad input gets a ``TypeError`` or
``ValueError`` that names the argument, what it got and what is allowed."""

from __future__ import annotations

import math

__all__ = ["check_int", "check_number", "check_probability", "check_choice"]


def check_int(name: str, value, low: int | None = None, high: int | None = None) -> int:
    """``value`` if it is an int (not a bool) in ``[low, high]``; else a clear error."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be {_range(low, high)}, got {value}")
    return value


def check_number(name: str, value, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> float:
    """``float(value)`` if it is a finite real number in ``[low, high]`` (``(low, high]`` with
    ``low_open``); else a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        raise ValueError(f"{name} must be {_range(low, high, low_open)}, got {value:g}")
    return value


def check_probability(name: str, value) -> float:
    """A number in (0, 1] (top-p, min-p, strength...)."""
    return check_number(name, value, 0.0, 1.0, low_open=True)


def check_choice(name: str, value, allowed) -> object:
    """``value`` if it is one of ``allowed``; else a ``ValueError`` listing them."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}")
    return value


def _range(low, high, low_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}]"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"<= {high:g}"
