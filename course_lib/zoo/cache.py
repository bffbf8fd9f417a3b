"""Where zoo checkpoints live, how they are keyed, and how they are written safely."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import torch

from ..checkpoint import load_tensors, save_json, save_tensors  # noqa: F401  (the zoo's file format)


def cache_dir() -> Path:
    """``$COURSE_LIB_CACHE`` if set, else ``~/.cache/course_lib`` (created if missing)."""
    root = os.environ.get("COURSE_LIB_CACHE") or Path.home() / ".cache" / "course_lib"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_key(config, extra: dict | None = None) -> str:
    """A short stable hash of a config (a dataclass or a JSON-able dict), plus ``extra``."""
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    if extra:
        config = {"config": config, **extra}
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def fingerprint(*items) -> str:
    """A short hash of tensors and strings: what a model was trained on.

    It goes into the cache key next to the config, so that a change in the data
    (a new corpus split, a change to ``make_shapes``) trains a new model instead
    of loading one trained on the old data.
    """
    h = hashlib.sha256()
    for item in items:
        if isinstance(item, torch.Tensor):
            h.update(str((item.dtype, tuple(item.shape))).encode())
            h.update(item.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(item, str):
            h.update(item.encode())
        elif isinstance(item, (list, tuple)):
            h.update(fingerprint(*item).encode())
        else:
            raise TypeError(f"can only fingerprint tensors, strings and lists of them, got {type(item).__name__}")
    return h.hexdigest()[:12]


def cache_path(name: str, config, suffix: str = ".safetensors", *, data: str | None = None,
               recipe: int | None = None) -> Path:
    """``<cache>/<name>-<key><suffix>``, the key hashing the config and, when given,
    ``data`` (a ``fingerprint`` of the training data) and ``recipe`` (a version number
    of the training code, raised whenever that code changes what it trains)."""
    extra = {k: v for k, v in (("data", data), ("recipe", recipe)) if v is not None}
    return cache_dir() / f"{name}-{config_key(config, extra)}{suffix}"
