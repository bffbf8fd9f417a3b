"""Loading weights strictly: every key present on both sides, every shape equal.

``model.load_state_dict(state, strict=True)`` refuses the same things; ``load_strict``
adds a short message that names the first few offending keys (and both shapes),
a ``KeyError`` for keys that are missing or unexpected and a ``ValueError`` for
shapes that differ, and loading into a model built on the meta device (no memory,
no initialisation). The diffusers loaders and the zoo's cached checkpoints go
through it.
"""

from __future__ import annotations

from torch import nn


def load_strict(model: nn.Module, state_dict: dict, what: str = "model") -> None:
    """Copy ``state_dict`` into ``model``; every key must exist on both sides with equal shapes.

    Raises ``KeyError`` naming missing/unexpected keys, ``ValueError`` naming
    mis-shaped ones (with both shapes).
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise KeyError(
            f"{what}: state dict does not match: missing keys {_short(missing)}, "
            f"unexpected keys {_short(unexpected)}"
        )
    bad = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
           for k in own if tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if bad:
        raise ValueError(f"{what}: mis-shaped weights: " + "; ".join(bad[:10]))
    model.load_state_dict(state_dict, strict=True, assign=_on_meta(model))


def _on_meta(model: nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def _short(keys: list[str], n: int = 8) -> str:
    if not keys:
        return "[]"
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return "[" + ", ".join(keys[:n]) + more + "]"
