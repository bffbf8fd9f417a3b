"""LoRA adapters of the course's GPT-2 in ``peft``'s file layout.

Hugging Face's ``peft`` keeps a LoRA adapter in a folder of two files:

* ``adapter_config.json``: ``{"peft_type": "LORA", "r": 32, "lora_alpha": 32,
  "target_modules": [...], "fan_in_fan_out": true, ...}``;
* ``adapter_model.safetensors``: for every adapted module ``<name>`` of the
  ``transformers`` model, ``base_model.model.<name>.lora_A.weight [r, in]`` and
  ``base_model.model.<name>.lora_B.weight [out, r]``.

The course's ``LoRALinear`` holds the same two matrices in the same orientation
(``lora_A [r, in]``, ``lora_B [out, r]``) with the same scaling α / r
(Hu et al. 2021, eq. 3), so converting is renaming modules: the course's names
↔ ``transformers``' names, read off ``gpt2``'s Hugging Face key map. GPT-2's
linear layers are ``Conv1D`` modules in ``transformers`` (weight ``[in, out]``);
peft says so with ``fan_in_fan_out: true`` and keeps A and B as above.

    save_peft_adapter(model, "out/")              # GPTModel with LoRA layers -> folder
    load_peft_adapter(model, "out/")              # plain GPTModel + folder -> model with LoRA layers
    # in transformers: PeftModel.from_pretrained(GPT2LMHeadModel(...), "out/")

Only adapters on linear layers are written: peft applies an adapter on GPT-2's
token embedding to the input lookup only, while the course's output head is tied
to the *adapted* table (``LoRAEmbedding.attend``), so the two would disagree.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from .checkpoint import save_json, save_tensors
from .gpt2 import GPTModel, hf_key_map
from .lora import LoRALinear
from .lora_tools import inject_lora, lora_modules

__all__ = ["save_peft_adapter", "load_peft_adapter", "hf_module_names", "linear_layer_names", "CONFIG_FILE",
           "WEIGHTS_FILE"]

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."  # peft's name for the wrapped transformers model
_PEFT_KEY = re.compile(rf"{re.escape(PREFIX)}(?P<module>.+)\.lora_(?P<ab>[AB])\.weight")


def hf_module_names(model: GPTModel) -> dict[str, str]:
    """Course module name -> ``transformers`` module name, for every weight of ``model``
    (``"h.0.attn.qkv_proj"`` -> ``"transformer.h.0.attn.c_attn"``)."""
    if not isinstance(model, GPTModel):
        raise TypeError(f"expected a course_lib.gpt2.GPTModel, got {type(model).__name__}")
    return {ours[: -len(".weight")]: theirs[: -len(".weight")]
            for ours, theirs, _ in hf_key_map(model.n_layers) if ours.endswith(".weight")}


def linear_layer_names(model: GPTModel) -> list[str]:
    """The course names of GPT-2's linear layers (those that are ``Conv1D`` in ``transformers``):
    attention and MLP projections of every block, the usual LoRA targets."""
    if not isinstance(model, GPTModel):
        raise TypeError(f"expected a course_lib.gpt2.GPTModel, got {type(model).__name__}")
    return [ours[: -len(".weight")] for ours, _, transposed in hf_key_map(model.n_layers) if transposed]


def _uniform(name: str, values: set):
    if len(values) != 1:
        raise ValueError(f"peft's config holds one {name} for all layers; this model's adapters use "
                         f"{sorted(values)}")
    return values.pop()


def save_peft_adapter(model: GPTModel, folder, base_model_name_or_path: str | None = None) -> Path:
    """Write ``model``'s LoRA adapters as ``folder/adapter_config.json`` + ``adapter_model.safetensors``.

    Every adapter must sit on a linear layer, be unmerged, and share one r and α.
    ``base_model_name_or_path`` (e.g. ``"gpt2"``) is recorded for peft. Returns the folder.
    """
    names = hf_module_names(model)
    layers = lora_modules(model)
    if not layers:
        raise ValueError("the model has no LoRA layers: nothing to save")
    not_linear = [n for n, m in layers.items() if not isinstance(m, LoRALinear)]
    if not_linear:
        raise ValueError(f"only adapters on linear layers can be saved for peft, found {not_linear[:4]}: "
                         f"peft would not apply an embedding adapter to GPT-2's tied output head")
    merged = [n for n, m in layers.items() if m.merged]
    if merged:
        raise ValueError(f"unmerge the adapters before saving (merged: {merged[:4]})")
    r = _uniform("rank r", {m.r for m in layers.values()})
    alpha = _uniform("alpha", {m.alpha for m in layers.values()})
    dropout = _uniform("dropout", {getattr(m.dropout, "p", 0.0) for m in layers.values()})
    tensors = {}
    for name, m in layers.items():
        tensors[f"{PREFIX}{names[name]}.lora_A.weight"] = m.lora_A.detach().float()  # [r, in]
        tensors[f"{PREFIX}{names[name]}.lora_B.weight"] = m.lora_B.detach().float()  # [out, r]
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model_name_or_path,
        "r": r, "lora_alpha": alpha, "lora_dropout": dropout, "bias": "none",
        "target_modules": sorted(names[n] for n in layers),
        "fan_in_fan_out": True,  # transformers' GPT-2 uses Conv1D layers
        "use_rslora": False, "use_dora": False, "modules_to_save": None, "inference_mode": True,
    }
    folder = Path(folder)
    save_tensors(folder / WEIGHTS_FILE, tensors)
    save_json(folder / CONFIG_FILE, config)
    return folder


def _read_config(folder: Path) -> dict:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a peft adapter folder holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    config = json.loads(path.read_text())
    unsupported = {"peft_type": ("LORA",), "bias": ("none",), "use_rslora": (False,), "use_dora": (False,),
                   "modules_to_save": (None, []), "rank_pattern": ({},), "alpha_pattern": ({},)}
    bad = [f"{k}={config[k]!r} (supported: {v})" for k, v in unsupported.items()
           if k in config and config[k] not in v]
    if bad:
        raise ValueError(f"{path}: this adapter uses peft options the course does not implement: {'; '.join(bad)}")
    return config


@torch.no_grad()
def load_peft_adapter(model: GPTModel, folder) -> GPTModel:
    """Put LoRA layers into ``model`` (a GPTModel without adapters) where the peft
    adapter in ``folder`` has them, and load its weights. Returns ``model``.

    Unknown module names, missing A/B halves and mis-shaped tensors raise
    ``ValueError`` naming them.
    """
    folder = Path(folder)
    config = _read_config(folder)
    if lora_modules(model):
        raise ValueError("the model already has LoRA layers: load a peft adapter into a model without them")
    tensors = load_file(folder / WEIGHTS_FILE)  # peft's metadata is not JSON: read the tensors only
    ours_of = {theirs: ours for ours, theirs in hf_module_names(model).items()}
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        m = _PEFT_KEY.fullmatch(key)
        if m is None or m["module"] not in ours_of:
            raise ValueError(f"{folder / WEIGHTS_FILE}: key {key!r} is not a LoRA weight of a GPT-2 module "
                             f"with {model.n_layers} layers")
        halves.setdefault(ours_of[m["module"]], {})[m["ab"]] = value
    incomplete = sorted(n for n, ab in halves.items() if set(ab) != {"A", "B"})
    if not halves or incomplete:
        raise ValueError(f"{folder / WEIGHTS_FILE}: every adapted module needs lora_A and lora_B; "
                         f"incomplete: {incomplete[:4]}")
    r = config["r"]
    alpha = config.get("lora_alpha", 8)  # peft's default α
    inject_lora(model, targets=[f"^{re.escape(n)}$" for n in halves], r=r, alpha=alpha,
                dropout=config.get("lora_dropout", 0.0))
    layers = lora_modules(model)
    for name, ab in halves.items():
        layer = layers[name]
        for half, param in (("A", layer.lora_A), ("B", layer.lora_B)):
            if ab[half].shape != param.shape:
                raise ValueError(f"{name}.lora_{half}: file {tuple(ab[half].shape)} vs model "
                                 f"{tuple(param.shape)} (r={r})")
            param.copy_(ab[half])
    return model

