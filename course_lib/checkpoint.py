"""Saving and loading weights: atomic files, and strict loading.

Files (the zoo's cache, tokenizers, adapters) are written atomically: to a
temporary file in the same folder, flushed to disk (``fsync``), then renamed over
the target, so a crash or a full disk never leaves a half-written file under the
real name. ``load_tensors`` turns a damaged or truncated file into an error that
names the file.

Loading weights strictly: every key present on both sides, every shape equal.

``model.load_state_dict(state, strict=True)`` refuses the same things; ``load_strict``
adds a short message that names the first few offending keys (and both shapes),
a ``KeyError`` for keys that are missing or unexpected and a ``ValueError`` for
shapes that differ, and loading into a model built on the meta device (no memory,
no initialisation). The diffusers loaders and the zoo's cached checkpoints go
through it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

__all__ = ["load_strict", "save_tensors", "load_tensors", "save_json", "atomic_write", "DamagedFileError"]


class DamagedFileError(RuntimeError):
    """A weights file that exists but cannot be read (truncated, corrupted, not safetensors)."""


def atomic_write(path, write) -> None:
    """Call ``write(tmp_path)``, fsync the file, then rename it to ``path`` (atomic on POSIX and Windows)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:  # the bytes reach the disk before the name does
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_tensors(path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """Atomically save a flat dict of tensors (safetensors) with JSON-able metadata."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_tensors(path) -> tuple[dict[str, torch.Tensor], dict]:
    """Inverse of ``save_tensors``: ``(tensors on the CPU, metadata)``.

    A file that cannot be read raises ``DamagedFileError`` naming it.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        return load_file(str(path)), meta
    except FileNotFoundError:
        raise
    except Exception as exc:  # safetensors raises its own error types for bad headers/lengths
        raise DamagedFileError(f"{path} is damaged or truncated ({type(exc).__name__}: {exc})") from exc


def save_json(path, obj) -> None:
    """Atomically save a JSON file."""
    text = json.dumps(obj, indent=1, sort_keys=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


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
