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


def config_key(config) -> str:
    """A short stable hash of a config (a dataclass or a JSON-able dict)."""
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def cache_path(name: str, config, suffix: str = ".safetensors") -> Path:
    """``<cache>/<name>-<hash of config><suffix>``"""
    return cache_dir() / f"{name}-{config_key(config)}{suffix}"


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
