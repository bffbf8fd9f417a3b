"""From ``--model`` / ``--checkpoint`` to a model: the offline zoo, a local folder, or a hub id.

* language models (``course-generate``, ``course-finetune-lora``):
  ``zoo:tiny-gpt`` (offline, the default) | ``gpt2`` (a hub id) | a folder in
  ``transformers``' layout -> ``(GPTModel, tokenizer)``; the tokenizer has
  ``encode(text)``, ``decode(ids)`` and ``eot_id``, like ``course_lib.tokenizer.BPETokenizer``;
* text-to-image pipelines (``course-txt2img``, ``course-img2img``, ``course-inpaint``):
  ``zoo:shapes-ldm`` (offline, the default) | a hub id | a folder in ``diffusers``'
  layout -> ``LatentDiffusion``.

These are the tools' only calls that load models.
"""

from __future__ import annotations

import torch

__all__ = ["ZOO", "load_language_model", "load_pipeline", "default_guidance", "HFTokenizer"]

ZOO = "zoo:"
LANGUAGE_MODELS = ("tiny-gpt",)
PIPELINES = ("shapes-ldm",)
# classifier-free guidance scale when --guidance is not given: Stable Diffusion's usual 7.5;
# the shapes model's own default (``ShapesLDM.sample``) is 5.0
GUIDANCE = {"zoo:shapes-ldm": 5.0, None: 7.5}


def default_guidance(checkpoint: str) -> float:
    return GUIDANCE.get(checkpoint, GUIDANCE[None])


def _zoo_name(spec: str, allowed: tuple[str, ...], flag: str) -> str:
    name = spec[len(ZOO):]
    if name not in allowed:
        raise ValueError(f"{flag} {spec!r}: this tool takes {', '.join(ZOO + n for n in allowed)} from the zoo")
    return name


class HFTokenizer:
    """A ``transformers`` tokenizer behind the course tokenizer's interface."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.eot_id = tokenizer.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids)


def load_language_model(spec: str, device: torch.device, dtype: torch.dtype | None = None,
                        options: dict | None = None, progress: bool = True):
    """``(GPTModel in eval mode on device, tokenizer)`` for ``--model spec``."""
    options = options or {}
    if spec.startswith(ZOO):
        from .. import zoo

        model, tokenizer = zoo.load(_zoo_name(spec, LANGUAGE_MODELS, "--model"), progress=progress, **options)
    else:
        if options:
            raise ValueError(f"--zoo-option applies to zoo: models only, not --model {spec!r}")
        import transformers

        from ..gpt2 import from_hf
        from ..hub import GPT2_FILES, resolve_repo

        if not progress:
            transformers.utils.logging.disable_progress_bar()
        folder = resolve_repo(spec, allow_patterns=GPT2_FILES)
        model = from_hf(transformers.GPT2LMHeadModel.from_pretrained(folder))
        tokenizer = HFTokenizer(transformers.AutoTokenizer.from_pretrained(folder))
    return model.to(device, dtype or torch.float32).eval(), tokenizer


def load_pipeline(spec: str, device: torch.device, dtype: torch.dtype | None = None,
                  options: dict | None = None, progress: bool = True):
    """A ``LatentDiffusion`` on ``device`` for ``--checkpoint spec``."""
    options = options or {}
    if spec.startswith(ZOO):
        from .. import zoo

        pipe = zoo.load(_zoo_name(spec, PIPELINES, "--checkpoint"), device=device, progress=progress, **options)
        return pipe.to(device, dtype or torch.float32)
    if options:
        raise ValueError(f"--zoo-option applies to zoo: models only, not --checkpoint {spec!r}")
    from ..latent_diffusion import load_stable_diffusion

    return load_stable_diffusion(spec, device=device, dtype=dtype)
