"""Argument checks shared by the whole package: bad input gets a ``TypeError`` or
``ValueError`` that names the argument, what it got and what is allowed."""

from __future__ import annotations

import math

__all__ = ["check_int", "check_number", "check_probability", "check_choice", "check_generator"]


def check_int(name: str, value, low: int | None = None, high: int | None = None, hint: str = "") -> int:
    """``value`` if it is an int (not a bool) in ``[low, high]``; else a clear error
    (``hint``, if given, is added to the message in brackets)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be {_range(low, high)}, got {value}{_hint(hint)}")
    return value


def check_number(name: str, value, low: float | None = None, high: float | None = None,
                 low_open: bool = False, hint: str = "") -> float:
    """``float(value)`` if it is a finite real number in ``[low, high]`` (``(low, high]`` with
    ``low_open``); else a clear error (``hint``, if given, is added in brackets)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        raise ValueError(f"{name} must be {_range(low, high, low_open)}, got {value:g}{_hint(hint)}")
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


def check_generator(generator, name: str = "generator"):
    """``generator`` if it is a ``torch.Generator`` or None; else a ``TypeError``."""
    import torch

    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def _hint(hint: str) -> str:
    return f" ({hint})" if hint else ""


def _range(low, high, low_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}]"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"<= {high:g}"
