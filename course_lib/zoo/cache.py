"""Where zoo checkpoints live, how they are keyed, and how they are written safely."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


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


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)  # atomic on POSIX and Windows
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """Atomically save a flat dict of tensors (safetensors) with string metadata."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    _atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Inverse of ``save_tensors``: ``(tensors, metadata)``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    return load_file(str(path)), meta


def save_json(path: Path, obj) -> None:
    """Atomically save a JSON file."""
    text = json.dumps(obj, indent=1, sort_keys=True)
    _atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text))
