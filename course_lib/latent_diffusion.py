"""Latent diffusion (Stable Diffusion) assembled from the course's own blocks.

Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models":
diffusion runs on the autoencoder's latents z = s · E(x) (s = ``scaling_factor``,
0.18215 for SD v1), conditioned on text through cross-attention (sec. 3.3):

    c = CLIP(tokens(prompt))                         [B, L, D]   (course_lib.clip)
    ε̃ = ε_θ(z_t, t, ∅) + w (ε_θ(z_t, t, c) − ε_θ(z_t, t, ∅))     classifier-free guidance
    z_{t'} = DDIM / DDPM step(ε̃, t, z_t)                          (course_lib.diffusion)
    x = D(z_0 / s)                                                (course_lib.autoencoder)

The pipeline is split as in diffusers: ``LatentDiffusion`` (this module) holds the
components (autoencoder, UNet, text encoder, tokenizer) and the ``SchedulerConfig``
read from the model's ``scheduler_config.json``; its methods ``text_to_image``,
``image_to_image`` (SDEdit) and ``inpaint`` (blended latents or RePaint) are the
pipeline functions of ``course_lib.pipelines``, each the shape of diffusers'
``__call__``, each making its own sampler (``sampler="ddim"`` or ``"ddpm"``). A call
stores nothing on the object, so calls are re-entrant (one may run inside another's
callback). Plain calls return the images; ``return_trajectory=True`` or
``record_attention=True`` return a ``PipelineResult(images, trajectory, attention)``
with the denoising trajectory and the cross-attention maps (what each prompt
token looks at, per latent pixel; ``record_attention="heads"`` keeps every head's
maps too).

``load_stable_diffusion(path_or_repo)`` reads a diffusers-layout folder (``unet/``,
``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``) into these classes —
SD 1.x and SD 2.x (v-prediction, trailing spacing, upcast attention); a hub id
(``stable-diffusion-v1-5/stable-diffusion-v1-5``) is downloaded when the hub is
reachable. The weights are cast to ``course_lib.device.amp_dtype(device)``
(bfloat16 or float16 on a GPU, float32 on the CPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from . import pipelines
from .pipelines import (CrossAttentionMaps, PipelineResult, downsample_mask, erase,  # noqa: F401  (public here too)
                        repaint_schedule)
from .schedules import SchedulerConfig

__all__ = ["LatentDiffusion", "PipelineResult", "CrossAttentionMaps", "load_stable_diffusion", "SD15_REPO",
           "repaint_schedule", "erase", "downsample_mask"]

SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"


class LatentDiffusion:
    """Stable Diffusion's components and scheduler config; the pipelines as methods.

    autoencoder: ``course_lib.autoencoder.Autoencoder``; unet: ``course_lib.unet.UNetModel``;
    text_encoder: ``course_lib.clip.CLIPTextEncoder``; tokenizer: a ``transformers.CLIPTokenizer``
    or a ``course_lib.clip.WordTokenizer``; scheduler: a ``SchedulerConfig`` (default: SD v1.5's).
    Images are ``[B, 3, H, W]`` in [-1, 1]; H and W must be multiples of the
    autoencoder's downsampling factor (8 for SD).
    """

    def __init__(self, autoencoder, unet, text_encoder, tokenizer, scheduler: SchedulerConfig | None = None,
                 image_size: int | None = None):
        if isinstance(scheduler, torch.Tensor):
            raise TypeError("LatentDiffusion takes a SchedulerConfig (course_lib.schedules), not betas: "
                            "make_betas('scaled_linear', 1000) with SD v1.5's sampling is SchedulerConfig()")
        scheduler = SchedulerConfig() if scheduler is None else scheduler
        if not isinstance(scheduler, SchedulerConfig):
            raise TypeError(f"scheduler must be a SchedulerConfig, got {type(scheduler).__name__}")
        self.autoencoder, self.unet, self.text_encoder, self.tokenizer = autoencoder, unet, text_encoder, tokenizer
        self.scheduler = scheduler
        self.factor = autoencoder.config.downsample_factor
        self.scaling_factor = float(autoencoder.config.scaling_factor)
        self.latent_channels = autoencoder.config.latent_channels
        self.image_size = image_size if image_size is not None else 64 * self.factor
        for m in (autoencoder, unet, text_encoder):
            m.eval()

    # the pipelines: course_lib.pipelines' functions, whose first argument is the LatentDiffusion
    text_to_image = pipelines.text_to_image
    image_to_image = pipelines.image_to_image
    inpaint = pipelines.inpaint

    # ------------------------------------------------------------------ components
    def to(self, device=None, dtype: torch.dtype | None = None) -> "LatentDiffusion":
        """Move (and/or cast) the UNet, text encoder and autoencoder; returns self."""
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        for m in (self.unet, self.text_encoder, self.autoencoder):
            m.to(device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def autoencoder_dtype(self) -> torch.dtype:
        return next(self.autoencoder.parameters()).dtype

    @property
    def betas(self) -> torch.Tensor:
        """The training noise schedule β ``[N]`` (from the scheduler config)."""
        return self.scheduler.betas()

    # ------------------------------------------------------------------ prompts
    @staticmethod
    def check_prompts(prompts) -> list[str]:
        """A str or a non-empty list of str -> list of str."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)):
            raise TypeError(f"prompts must be a str or a list of str, got {type(prompts).__name__}")
        if len(prompts) == 0:
            raise ValueError("the prompt list is empty: give at least one prompt")
        if not all(isinstance(p, str) for p in prompts):
            raise TypeError("every prompt must be a str")
        return list(prompts)

    def prompts_for(self, prompts, b: int) -> list[str]:
        """One prompt per image: a single prompt is repeated for a batch of ``b``."""
        prompts = self.check_prompts(prompts)
        if len(prompts) == 1 and b > 1:
            prompts = prompts * b
        if len(prompts) != b:
            raise ValueError(f"got {len(prompts)} prompts for {b} images; give one prompt or one per image")
        return prompts

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> token ids [B, L] (padded to the encoder's fixed length, as SD does)."""
        tok = self.tokenizer
        if hasattr(tok, "model_max_length"):  # transformers' CLIPTokenizer
            n = tok.model_max_length
            lengths = [len(ids) for ids in tok(prompts)["input_ids"]]
            too_long = [p for p, k in zip(prompts, lengths) if k > n]
            if too_long:
                raise ValueError(f"prompt {too_long[0]!r} is longer than the {n} tokens the text encoder reads")
            return tok(prompts, padding="max_length", max_length=n, truncation=True, return_tensors="pt").input_ids
        return tok(prompts)

    def tokens(self, ids: torch.Tensor) -> list[list[str]]:
        return [list(self.tokenizer.convert_ids_to_tokens(row.tolist())) for row in ids]

    @torch.no_grad()
    def encode_prompts(self, prompts) -> torch.Tensor:
        """Prompts -> text-encoder hidden states [B, L, D] (the UNet's ``cond``)."""
        ids = self.tokenize(self.check_prompts(prompts)).to(self.device)
        return self.text_encoder(ids).to(self.dtype)

    # ------------------------------------------------------------------ images and latents
    def check_image(self, image) -> torch.Tensor:
        """A float image batch [B, 3, H, W] (or one image [3, H, W]) with sides divisible by the factor."""
        if not isinstance(image, torch.Tensor) or not image.is_floating_point():
            raise TypeError("image must be a float tensor [B, 3, H, W] in [-1, 1]")
        if image.dim() == 3:
            image = image[None]
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be [B, 3, H, W] (or [3, H, W]), got {tuple(image.shape)}")
        h, w = image.shape[-2:]
        if h % self.factor or w % self.factor:
            raise ValueError(f"image side {h}x{w} is not divisible by {self.factor} (the autoencoder's "
                             f"downsampling factor); crop or resize to a multiple of {self.factor}")
        return image

    def check_size(self, height, width) -> tuple[int, int]:
        """Output height and width (default ``image_size``), positive multiples of the factor."""
        height = self.image_size if height is None else height
        width = self.image_size if width is None else width
        for name, v in (("height", height), ("width", width)):
            if isinstance(v, bool) or not isinstance(v, int) or v < self.factor or v % self.factor:
                raise ValueError(f"{name}={v!r}: image side not divisible by {self.factor} (the autoencoder's "
                                 f"downsampling factor); use a positive multiple of {self.factor}")
        return height, width

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Image [B, 3, H, W] -> scaled latents s · μ(x) [B, C, H/f, W/f] (the posterior mean, float32)."""
        image = self.check_image(image).to(self.device, self.autoencoder_dtype)
        return self.autoencoder.encode(image).mean.float() * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> image [B, 3, H, W] (float32, not clamped)."""
        z = (latents / self.scaling_factor).to(self.device, self.autoencoder_dtype)
        return self.autoencoder.decode(z).float()

    # ------------------------------------------------------------------ masks
    def latent_mask(self, mask: torch.Tensor, image: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
        """Pixel mask -> latent mask [B, 1, H/f, W/f] (1 = generate).

        One latent cell covers f×f pixels; it is regenerated when at least ``threshold``
        of them are masked (0.5: the nearest-neighbour downsampling SD's inpainting uses).
        A small threshold (e.g. 1e-6: "any pixel") leaves no masked pixel unregenerated
        but also regenerates more of the kept region around the mask.
        """
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
        m = self.pixel_mask(mask, image)  # [B, 1, H, W]
        return downsample_mask(m, self.factor, threshold).to(self.device)

    def pixel_mask(self, mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Check a mask against the image; return it as floats {0, 1} [B, 1, H, W]."""
        if not isinstance(mask, torch.Tensor):
            raise TypeError("mask must be a tensor (1/True = repaint, 0/False = keep)")
        b, _, h, w = image.shape
        m = mask
        if m.dim() == 2:
            m = m[None, None]
        elif m.dim() == 3:
            m = m[:, None]
        if m.dim() != 4 or m.shape[1] != 1 or tuple(m.shape[-2:]) != (h, w) or m.shape[0] not in (1, b):
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match the image {tuple(image.shape)}: "
                             f"allowed [H, W], [B, H, W] or [B or 1, 1, H, W] with H, W = {h}, {w}")
        m = m.float()
        if m.min() < 0 or m.max() > 1:
            raise ValueError("mask values must be in [0, 1] (1 = repaint, 0 = keep)")
        return (m > 0.5).float().expand(b, 1, h, w).to(image.device)


# ---------------------------------------------------------------------- loading SD v1.x / v2.x

def _load_text_encoder(folder: Path):
    from safetensors.torch import load_file

    from .clip import CLIPTextEncoder, config_from_hf, load_hf_state_dict

    cfg = json.loads((folder / "config.json").read_text())
    weights = folder / "model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"{weights} not found (the text encoder must be saved as safetensors)")
    with torch.device("meta"):
        model = CLIPTextEncoder(config_from_hf(cfg))
    return load_hf_state_dict(model, load_file(str(weights)))


def _scheduler_config(folder: Path) -> SchedulerConfig:
    """The whole ``scheduler/scheduler_config.json`` (SD v1.5's settings when the folder has none)."""
    path = folder / "scheduler_config.json"
    if not path.exists():
        return SchedulerConfig()
    try:
        return SchedulerConfig.from_diffusers(json.loads(path.read_text()))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def load_stable_diffusion(path_or_repo: str = SD15_REPO, device: torch.device | str | None = None,
                          dtype: torch.dtype | None = None) -> LatentDiffusion:
    """A diffusers-layout Stable Diffusion folder or hub id -> ``LatentDiffusion``.

    A hub id (SD 1.x, SD 2.x, any diffusers-layout repo) is found in the local Hugging Face
    cache, offline included, or downloaded when the hub is reachable (``course_lib.hub``).

    The folder holds ``unet/``, ``vae/``, ``text_encoder/`` (``model.safetensors``),
    ``tokenizer/`` and optionally ``scheduler/``; every component is loaded strictly
    into the course's classes, and the whole scheduler config is honoured (or refused,
    naming the field: see ``SchedulerConfig.from_diffusers``). ``dtype`` defaults to
    ``amp_dtype(device)``: bfloat16/float16 on a GPU, float32 on the CPU.
    """
    from .autoencoder import load_autoencoder_folder
    from .clip import load_clip_tokenizer
    from .device import amp_dtype, get_device
    from .unet import load_unet_folder

    from .hub import STABLE_DIFFUSION_FILES, resolve_repo

    folder = resolve_repo(path_or_repo, STABLE_DIFFUSION_FILES)  # a folder, the HF cache, or a download
    missing = [d for d in ("unet", "vae", "text_encoder", "tokenizer") if not (folder / d).is_dir()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a Stable Diffusion folder: missing {', '.join(missing)}/")
    device = get_device() if device is None else torch.device(device)
    dtype = amp_dtype(device) if dtype is None else dtype
    scheduler = _scheduler_config(folder / "scheduler")  # refuses an unsupported config before loading weights
    unet = load_unet_folder(folder / "unet").to(device, dtype)
    vae = load_autoencoder_folder(folder / "vae").to(device, dtype)
    text_encoder = _load_text_encoder(folder / "text_encoder").to(device, dtype)
    tokenizer = load_clip_tokenizer(str(folder / "tokenizer"))
    sample_size = json.loads((folder / "unet" / "config.json").read_text()).get("sample_size", 64)
    image_size = sample_size * vae.config.downsample_factor
    return LatentDiffusion(vae, unet, text_encoder, tokenizer, scheduler, image_size=image_size)
