"""Notebook 05 (LoRA): exercise checks."""

from __future__ import annotations

from .core import Case, generator, register, require_signature, run_cases  # noqa: F401

__all__: list[str] = []
