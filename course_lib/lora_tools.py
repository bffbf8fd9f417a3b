"""Working with LoRA adapters on an existing model.

``course_lib.lora`` defines the layers; this module puts them into a model and
manages them:

* ``inject_lora``       replace chosen ``nn.Linear``/``nn.Embedding`` by LoRA layers
                        (their pretrained weights are reused, frozen);
* ``mark_only_lora_trainable`` (count what is left trainable with
                        ``course_lib.params.count_parameters``);
* ``save_adapter`` / ``load_adapter``: the adapter alone, as safetensors
                        (kilobytes instead of the model's megabytes), strict keys;
* ``merge_adapters`` / ``unmerge_adapters``: fold ΔW = (α/r)·B A into the
                        weights in place and take it out again; ``merge_lora``
                        (in ``course_lib.lora``) makes the merge permanent.

Hu et al. 2021 (arXiv:2106.09685) adapt the attention projections; in
``GPTModel`` the fused ``attn.qkv_proj`` (q, k, v), ``attn.out_proj`` and the
MLP's ``fc1``/``fc2`` are the usual targets.
"""

from __future__ import annotations

import json
import os
import re
from typing import Iterable

import torch
import torch.nn as nn
from safetensors.torch import load_file, safe_open, save_file

from .checkpoint import atomic_write
from .lora import LoRAEmbedding, LoRALayer, LoRALinear, is_lora_key, lora_state_dict

__all__ = ["inject_lora", "lora_modules", "mark_only_lora_trainable", "save_adapter", "load_adapter",
           "merge_adapters", "unmerge_adapters"]

ADAPTER_FORMAT = "course_lib.lora/1"


def lora_modules(model: nn.Module) -> dict[str, LoRALayer]:
    """All LoRA layers of ``model`` by qualified name (``"h.0.attn.qkv_proj"``)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALayer)}


def _compile_targets(targets) -> list[re.Pattern]:
    if isinstance(targets, str):
        targets = (targets,)
    if not isinstance(targets, Iterable):
        raise TypeError(f"targets must be a string or a sequence of strings, got {type(targets).__name__}")
    targets = tuple(targets)
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(f"targets must be non-empty strings (regular expressions searched in "
                         f"module names), got {targets!r}")
    return [re.compile(t) for t in targets]


def inject_lora(model: nn.Module, targets=("attn", "mlp"), r: int = 8, alpha: float | None = None,
                dropout: float = 0.0, embeddings: bool = False) -> list[str]:
    """Replace the ``nn.Linear`` layers whose qualified name matches one of ``targets``
    by ``LoRALinear`` layers that reuse (and freeze) their weights; with
    ``embeddings=True`` matching ``nn.Embedding`` layers become ``LoRAEmbedding``.

    ``targets`` are regular expressions searched in names such as
    ``"h.3.attn.qkv_proj"``; a plain word matches as a substring. Afterwards
    only adapter parameters are trainable (``mark_only_lora_trainable``).
    A fresh adapter has B = 0, so the model's outputs do not change.
    Returns the names of the replaced modules; raises ``ValueError`` if none matched.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"inject_lora expects an nn.Module, got {type(model).__name__}")
    patterns = _compile_targets(targets)
    kinds = (nn.Linear, nn.Embedding) if embeddings else (nn.Linear,)
    chosen = []
    for name, module in model.named_modules():
        if not name or not any(p.search(name) for p in patterns):
            continue
        if isinstance(module, LoRALayer):
            raise ValueError(f"module {name!r} already has a LoRA adapter")
        if isinstance(module, kinds):
            chosen.append(name)
    if not chosen:
        candidates = [n for n, m in model.named_modules() if isinstance(m, kinds)]
        raise ValueError(f"no {'/'.join(k.__name__ for k in kinds)} module name matches targets "
                         f"{[p.pattern for p in patterns]}; candidates: {candidates[:12]}"
                         f"{' …' if len(candidates) > 12 else ''}")
    for name in chosen:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child_name)
        if isinstance(old, nn.Embedding):
            new = LoRAEmbedding.from_embedding(old, r, alpha)
        else:
            new = LoRALinear.from_linear(old, r, alpha, dropout=dropout)
        setattr(parent, child_name, new)
    mark_only_lora_trainable(model)
    return chosen


def mark_only_lora_trainable(model: nn.Module) -> nn.Module:
    """Freeze every parameter except the adapters' ``lora_A``/``lora_B`` (in place)."""
    if not lora_modules(model):
        raise ValueError("the model has no LoRA layers: inject_lora first")
    for name, p in model.named_parameters():
        p.requires_grad_(is_lora_key(name))
    return model


def _adapter_config(model: nn.Module) -> dict[str, dict]:
    return {name: {"type": type(m).__name__, "r": m.r, "alpha": m.alpha}
            for name, m in lora_modules(model).items()}


def save_adapter(model: nn.Module, path: str | os.PathLike) -> int:
    """Write only the adapter tensors (and each layer's r and α) to a safetensors file.

    Returns the file size in bytes. Merged layers are refused: their weights
    already contain ΔW, and saving would hide that.
    """
    modules = lora_modules(model)
    if not modules:
        raise ValueError("the model has no LoRA layers: nothing to save")
    merged = [n for n, m in modules.items() if m.merged]
    if merged:
        raise ValueError(f"unmerge the adapters before saving (merged: {merged[:4]})")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in lora_state_dict(model).items()}
    metadata = {"format": ADAPTER_FORMAT, "config": json.dumps(_adapter_config(model))}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))  # never half-written
    return os.path.getsize(path)


@torch.no_grad()
def load_adapter(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load an adapter written by ``save_adapter`` into a model with the same LoRA layers.

    Strict: missing or unexpected keys, shape mismatches, or a different r/α
    for a layer raise ``ValueError`` naming them. The base weights are untouched.
    """
    path = os.fspath(path)
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{path} is not a course_lib LoRA adapter (format {meta.get('format')!r})")
    saved_cfg = json.loads(meta["config"])
    cfg = _adapter_config(model)
    if saved_cfg != cfg:
        diff = sorted(n for n in set(saved_cfg) | set(cfg) if saved_cfg.get(n) != cfg.get(n))
        raise ValueError(f"adapter layers differ from the model's for {diff[:6]}: "
                         f"file {[saved_cfg.get(n) for n in diff[:3]]} vs "
                         f"model {[cfg.get(n) for n in diff[:3]]}")
    tensors = load_file(path)
    own = lora_state_dict(model)
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise ValueError(f"adapter keys do not match the model: missing {missing[:6]}, "
                         f"unexpected {unexpected[:6]}")
    bad = [f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
           for k, v in own.items() if tensors[k].shape != v.shape]
    if bad:
        raise ValueError("adapter shape mismatch: " + "; ".join(bad[:6]))
    for name, m in lora_modules(model).items():
        if m.merged:
            raise ValueError(f"unmerge the adapters before loading (merged: {name!r})")
    params = dict(model.named_parameters(remove_duplicate=False))
    for k, v in tensors.items():
        params[k].copy_(v)
    return model


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold every adapter into its weight in place (reversible with ``unmerge_adapters``)."""
    modules = lora_modules(model)
    if not modules:
        raise ValueError("the model has no LoRA layers to merge")
    for m in modules.values():
        m.merge()
    return model


def unmerge_adapters(model: nn.Module) -> nn.Module:
    """Take every merged adapter out of its weight again (exact up to float rounding)."""
    modules = lora_modules(model)
    if not modules:
        raise ValueError("the model has no LoRA layers to unmerge")
    for m in modules.values():
        m.unmerge()
    return model
