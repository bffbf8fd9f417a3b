"""Counting parameters: the one counter every notebook and module uses."""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

__all__ = ["ParamCount", "count_parameters"]


class ParamCount(NamedTuple):
    """``trainable`` and ``total`` parameter counts."""

    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        """Trainable share of all parameters."""
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"trainable {self.trainable:,} / total {self.total:,} ({100 * self.fraction:.4f}%)"


def count_parameters(model: nn.Module) -> ParamCount:
    """Trainable and total parameter counts of ``model``.

    A tensor shared by two modules (GPT-2's output head tied to its token
    embedding) counts once, as in the papers; works on the meta device too.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_parameters expects an nn.Module, got {type(model).__name__}")
    trainable = total = 0
    for p in model.parameters():  # parameters() yields each shared tensor once
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return ParamCount(trainable, total)
