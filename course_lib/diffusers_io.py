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

from .checkpoint import load_strict

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")

# diffusers name -> course name, shared by the UNet and the autoencoder (substring replacements)
RENAMES = [
    ("downsamplers.0.", "downsample."), ("upsamplers.0.", "upsample."),
    (".to_q.", ".q_proj."), (".to_k.", ".k_proj."), (".to_v.", ".v_proj."), (".to_out.0.", ".out_proj."),
]


def rename_keys(state_dict: dict, renames: list[tuple[str, str]]) -> dict:
    """Replace each ``old`` substring by ``new`` (in order) in every key."""
    out = {}
    for key, value in state_dict.items():
        for old, new in renames:
            key = key.replace(old, new)
        out[key] = value
    return out


def build_and_load(cls, config, state_dict: dict, renames: list[tuple[str, str]],
                   device=None, dtype=None) -> nn.Module:
    """Build ``cls(config)`` on the meta device (no memory, no init) and load ``state_dict`` into it strictly,
    then move it to ``device`` and/or cast it to ``dtype`` (either may be None: left as loaded)."""
    with torch.device("meta"):
        model = cls(config)
    load_strict(model, rename_keys(state_dict, renames), cls.__name__)
    return model.to(device=device, dtype=dtype)


def convert_model(cls, model, config_from_diffusers, renames: list[tuple[str, str]]) -> nn.Module:
    """A diffusers model -> ``cls`` with a copy of its weights, on its device and in its dtype."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}  # no shared storage
    return build_and_load(cls, config_from_diffusers(dict(model.config)), state, renames,
                          device=model.device, dtype=model.dtype)


def load_folder(cls, path, config_from_diffusers, renames: list[tuple[str, str]]) -> nn.Module:
    """A diffusers model folder (``config.json`` + weights) -> ``cls``, loaded strictly."""
    config, state = read_folder(path)
    return build_and_load(cls, config_from_diffusers(config), state, renames)


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
