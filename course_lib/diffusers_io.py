"""Reading diffusers-layout weights into the course's models, strictly.

A diffusers model folder (what ``save_pretrained`` writes, and what the hub's
``unet/`` and ``vae/`` sub-folders hold) contains ``config.json`` and
``diffusion_pytorch_model.safetensors``. Our modules use the same names as the
checkpoints except for a few leaves (``to_q`` → ``q_proj`` ...); ``rename_keys``
applies those renames and ``load_strict`` refuses anything that does not fit,
naming the keys and shapes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def rename_keys(state_dict: dict, renames: list[tuple[str, str]]) -> dict:
    """Replace each ``old`` substring by ``new`` (in order) in every key."""
    out = {}
    for key, value in state_dict.items():
        for old, new in renames:
            key = key.replace(old, new)
        out[key] = value
    return out


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


def build_and_load(cls, config, state_dict: dict, renames: list[tuple[str, str]],
                   device=None, dtype=None) -> nn.Module:
    """Build ``cls(config)`` on the meta device (no memory, no init) and load ``state_dict`` into it strictly."""
    with torch.device("meta"):
        model = cls(config)
    load_strict(model, rename_keys(state_dict, renames), cls.__name__)
    return model.to(device=device, dtype=dtype) if device is not None else model


def _on_meta(model: nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def _short(keys: list[str], n: int = 8) -> str:
    if not keys:
        return "[]"
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return "[" + ", ".join(keys[:n]) + more + "]"


def read_folder(path) -> tuple[dict, dict]:
    """Return ``(config dict, state dict)`` from a diffusers model folder."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory (expected a diffusers model folder)")
    config_file = path / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{config_file} not found")
    config = json.loads(config_file.read_text())
    for name in WEIGHT_FILES:
        weights = path / name
        if weights.exists():
            break
    else:
        raise FileNotFoundError(f"no weights in {path}: expected one of {', '.join(WEIGHT_FILES)}")
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    return config, state


def check_supported(config: dict, defaults: dict, what: str) -> None:
    """Raise ``ValueError`` if a config field differs from what we implement.

    ``defaults`` maps a field to its one allowed value, or to a ``frozenset`` of them.
    """
    for key, allowed in defaults.items():
        if key not in config:  # absent: the library default, which is what we implement
            continue
        value = config[key]
        if isinstance(value, list):
            value = tuple(value)
        ok = value in allowed if isinstance(allowed, frozenset) else value == allowed
        if not ok:
            allowed = sorted(allowed, key=repr) if isinstance(allowed, frozenset) else allowed
            raise ValueError(
                f"{what}: config field {key}={value!r} is not supported by the course model "
                f"(only {allowed!r}, as in Stable Diffusion v1/v2)"
            )
