"""Latent diffusion (Stable Diffusion) assembled from the course's own blocks.

Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models":
diffusion runs on the autoencoder's latents z = s · E(x) (s = ``scaling_factor``,
0.18215 for SD v1), conditioned on text through cross-attention (sec. 3.3):

    c = CLIP(tokens(prompt))                         [B, L, D]   (course_lib.clip)
    ε̃ = ε_θ(z_t, t, ∅) + w (ε_θ(z_t, t, c) − ε_θ(z_t, t, ∅))     classifier-free guidance
    z_{t'} = DDIM / DDPM step(ε̃, t, z_t)                          (course_lib.diffusion)
    x = D(z_0 / s)                                                (course_lib.autoencoder)

On top of text-to-image, three ways to start from a picture:

* ``image_to_image`` — SDEdit (Meng et al. 2022): noise E(x) to an intermediate
  timestep chosen by ``strength`` ∈ (0, 1] and denoise from there;
* ``inpaint(method="blend")`` — after every step, put back the known region
  re-noised to the current timestep (Avrahami et al. 2023, "Blended Latent
  Diffusion"): z ← m ⊙ z + (1 − m) ⊙ q(z_t | z_known);
* ``inpaint(method="repaint")`` — RePaint (Lugmayr et al. 2022): the same blending
  plus resampling: every ``jump_length`` steps, re-noise back up that many steps
  and denoise again (``jump_n_sample`` passes in all), so the generated region has
  time to agree with the known one.

Both inpainting methods first ``erase`` the masked pixels (the mean colour of the
rest), so that nothing of the old content reaches the latents they keep.

The pipeline is split as in diffusers: ``LatentDiffusion`` holds the components
(autoencoder, UNet, text encoder, tokenizer) and the ``SchedulerConfig`` read from
the model's ``scheduler_config.json``; each call makes its own sampler
(``sampler="ddim"`` or ``"ddpm"``, ``course_lib.diffusion.make_sampler``) and runs
one of the three pipeline functions below — ``text_to_image``, ``image_to_image``,
``inpaint``, each the shape of diffusers' ``__call__``: check every argument,
encode the prompt, prepare the latents, loop over ``sampler.step``, decode. A call
stores nothing on the object, so calls are re-entrant (one may run inside another's
callback). Plain calls return the images; ``return_trajectory=True`` or
``record_attention=True`` return a ``PipelineResult(images, trajectory, attention)``
with the denoising trajectory and the cross-attention maps (what each prompt
token looks at, per latent pixel).

``load_stable_diffusion(path_or_repo)`` reads a diffusers-layout folder (``unet/``,
``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``) into these classes —
SD 1.x and SD 2.x (v-prediction, trailing spacing, upcast attention); a hub id
(``stable-diffusion-v1-5/stable-diffusion-v1-5``) is downloaded when the hub is
reachable. The weights are cast to ``course_lib.device.amp_dtype(device)``
(bfloat16 or float16 on a GPU, float32 on the CPU).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .checks import check_choice, check_int, check_number
from .device import randn
from .diffusion import ClassifierFreeGuidance, StepInfo, Trajectory, make_sampler
from .schedules import SchedulerConfig

__all__ = ["LatentDiffusion", "PipelineResult", "CrossAttentionMaps", "text_to_image", "image_to_image",
           "inpaint", "load_stable_diffusion", "SD15_REPO", "repaint_schedule", "erase", "OUTPUT_TYPES"]

OUTPUT_TYPES = ("image", "latent")

SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"


@dataclass
class CrossAttentionMaps:
    """Cross-attention per prompt token, averaged over heads, layers and sampling steps.

    maps: [B, L, h, w] (latent resolution); tokens[b]: the L token strings of prompt b.
    """

    maps: torch.Tensor
    tokens: list[list[str]]

    def for_prompt(self, b: int = 0, skip_special: bool = True) -> list[tuple[str, torch.Tensor]]:
        """[(token, map [h, w])] for prompt b, up to its end token (specials left out)."""
        out = []
        for i, tok in enumerate(self.tokens[b]):
            if tok in ("<|endoftext|>", "<eos>"):
                break
            if skip_special and tok in ("<|startoftext|>", "<bos>"):
                continue
            out.append((tok, self.maps[b, i]))
        return out


@dataclass
class PipelineResult:
    """What a pipeline call returns when asked for more than the images.

    images: [B, 3, H, W] in about [-1, 1] (not clamped), or the latents [B, C, h, w]
    with ``output_type="latent"``; trajectory: every step (``return_trajectory=True``);
    attention: cross-attention per prompt token (``record_attention=True``).
    """

    images: torch.Tensor
    trajectory: Trajectory | None = None
    attention: CrossAttentionMaps | None = None


def erase(image: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """Fill the masked pixels with the mean colour of the kept ones (per image).

    What is under the mask is unknown by definition, and it must not reach the
    known latents: the VAE encoder's receptive field, and its mid-block
    self-attention, spread every pixel over many latents, so the old content would
    tint the new one (an old green shape turns a prompted purple one blue).
    image: [B, 3, H, W]; pixel_mask: [B, 1, H, W] floats, 1 = masked.
    """
    keep = 1 - pixel_mask
    mean = (image * keep).sum((2, 3), keepdim=True) / keep.sum((2, 3), keepdim=True).clamp(min=1)  # [B, 3, 1, 1]
    return image * keep + mean * pixel_mask


def repaint_schedule(n_steps: int, jump_length: int, jump_n_sample: int) -> list[int]:
    """RePaint's path through the step indices 0 … n (Lugmayr et al. 2022, sec. 4.2).

    Index i means "the sample is at ``timesteps[i]``", index n means "clean". The
    path goes down one index at a time; at every multiple of ``jump_length`` it
    jumps back up ``jump_length`` indices, ``jump_n_sample − 1`` times per place.
    """
    for name, v in (("n_steps", n_steps), ("jump_length", jump_length), ("jump_n_sample", jump_n_sample)):
        check_int(name, v, 1)
    jumps_left = {j: jump_n_sample - 1 for j in range(jump_length, n_steps, jump_length)}
    path, i = [0], 0
    while i < n_steps:
        i += 1
        path.append(i)
        if jumps_left.get(i, 0) > 0:
            jumps_left[i] -= 1
            i -= jump_length
            path.append(i)
    return path


# ---------------------------------------------------------------------- the pipelines
@dataclass
class _Common:
    """The arguments every pipeline checks before it samples, and the sampler they make."""

    sampler: object  # DDIMSampler | DDPMSampler, fresh for this call
    guidance_scale: float
    generator: torch.Generator | None
    callback: Callable | None
    output_type: str
    record_attention: bool
    return_trajectory: bool


def _check_common(ldm, guidance_scale, n_steps, eta, generator, callback, output_type, sampler,
                  record_attention, return_trajectory) -> _Common:
    check_number("guidance_scale", guidance_scale, 0.0)
    check_choice("output_type", output_type, OUTPUT_TYPES)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable (callback(info: StepInfo)) or None, got {type(callback).__name__}")
    for name, flag in (("record_attention", record_attention), ("return_trajectory", return_trajectory)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {flag!r}")
    return _Common(make_sampler(ldm.scheduler, sampler, n_steps, eta), float(guidance_scale), generator,
                   callback, output_type, record_attention, return_trajectory)


class _AttentionAverage:
    """Sums the per-token cross-attention maps of the conditional half over the sampling steps."""

    def __init__(self):
        self.total, self.count = None, 0

    def add(self, maps: torch.Tensor) -> None:  # [B, L, h, w]
        self.total = maps if self.total is None else self.total + maps
        self.count += 1

    def result(self, tokens: list[list[str]]) -> CrossAttentionMaps:
        return CrossAttentionMaps((self.total / self.count).cpu(), tokens)


def _guided_eps(ldm, cond: torch.Tensor, guidance_scale: float, attention: _AttentionAverage | None) -> Callable:
    """ε̃(z, t) with classifier-free guidance (float32 in and out, the UNet in its own dtype).

    With ``attention`` the UNet records its cross-attention during this forward only (so a
    call running inside a callback of another sees an ordinary UNet).
    """
    guided = ClassifierFreeGuidance(ldm.unet, cond, ldm.encode_prompts([""]), guidance_scale)
    b = cond.shape[0]

    def eps_fn(z, t):  # z: [B, C, h, w] float32
        if attention is None:
            return guided(z.to(ldm.dtype), t).float()
        ldm.unet.record_cross_attention(True)
        try:
            eps = guided(z.to(ldm.dtype), t).float()
            attention.add(ldm.unet.cross_attention_token_maps().float()[-b:])  # the conditional half [B, L, h, w]
        finally:
            ldm.unet.record_cross_attention(False)
        return eps

    return eps_fn


def _finish(ldm, z, common: _Common, trajectory, attention: _AttentionAverage | None, ids):
    """Decode (or not) and package the result: images, or a ``PipelineResult`` when more was asked."""
    images = z if common.output_type == "latent" else ldm.decode(z)
    if not (common.return_trajectory or common.record_attention):
        return images
    return PipelineResult(images, trajectory if common.return_trajectory else None,
                          attention.result(ldm.tokens(ids)) if attention is not None else None)


@torch.no_grad()
def text_to_image(ldm: "LatentDiffusion", prompts, guidance_scale: float = 7.5, n_steps: int = 50, eta: float = 0.0,
                  generator: torch.Generator | None = None, callback: Callable | None = None, *,
                  height: int | None = None, width: int | None = None, latents: torch.Tensor | None = None,
                  output_type: str = "image", sampler: str = "ddim", record_attention: bool = False,
                  return_trajectory: bool = False):
    """Sample images for ``prompts`` (``sampler`` with ``n_steps`` and ``eta``, guidance w).

    ``latents`` (optional): the starting noise z_T [B, C, H/f, W/f]; otherwise drawn
    from ``generator``. ``callback(info: StepInfo)`` runs after each step (latents);
    ``output_type="latent"`` returns z_0 instead of the decoded images.
    """
    # 1. check every argument before any work
    prompts = ldm.check_prompts(prompts)
    common = _check_common(ldm, guidance_scale, n_steps, eta, generator, callback, output_type, sampler,
                           record_attention, return_trajectory)
    height, width = ldm.check_size(height, width)
    shape = (len(prompts), ldm.latent_channels, height // ldm.factor, width // ldm.factor)
    if latents is not None and (not isinstance(latents, torch.Tensor) or tuple(latents.shape) != shape):
        got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise ValueError(f"latents must be {shape} for {len(prompts)} prompts at {height}x{width}, got {got}")
    ids = ldm.tokenize(prompts)
    # 2. encode the prompt, 3. prepare the latents
    cond = ldm.text_encoder(ids.to(ldm.device)).to(ldm.dtype)  # [B, L, D]
    z = randn(shape, generator=generator, device=ldm.device) if latents is None else latents.to(ldm.device).float()
    # 4. denoise
    attention = _AttentionAverage() if record_attention else None
    out = common.sampler.sample(_guided_eps(ldm, cond, common.guidance_scale, attention), z, generator=generator,
                                callback=callback, return_trajectory=return_trajectory)
    z, trajectory = out if return_trajectory else (out, None)
    # 5. decode
    return _finish(ldm, z, common, trajectory, attention, ids)


@torch.no_grad()
def image_to_image(ldm: "LatentDiffusion", image: torch.Tensor, prompt, strength: float = 0.6,
                   guidance_scale: float = 7.5, n_steps: int = 50, eta: float = 0.0,
                   generator: torch.Generator | None = None, callback: Callable | None = None, *,
                   output_type: str = "image", sampler: str = "ddim", record_attention: bool = False,
                   return_trajectory: bool = False):
    """SDEdit: encode ``image``, noise it to the timestep ``strength`` of the way up, denoise.

    strength ∈ (0, 1]: 1 ignores the image (pure noise), small values keep it.
    As in diffusers, ``int(n_steps · strength)`` steps are run.
    """
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1] (0 < strength ≤ 1), got {strength!r}")
    image = ldm.check_image(image)
    prompts = ldm.prompts_for(prompt, image.shape[0])
    common = _check_common(ldm, guidance_scale, n_steps, eta, generator, callback, output_type, sampler,
                           record_attention, return_trajectory)
    start = common.sampler.start_index(strength)
    if start >= n_steps:
        raise ValueError(f"strength={strength} with n_steps={n_steps} leaves no step to run "
                         f"(int(n_steps·strength) = 0); raise strength or n_steps")
    ids = ldm.tokenize(prompts)
    cond = ldm.text_encoder(ids.to(ldm.device)).to(ldm.dtype)
    z0 = ldm.encode(image)  # [B, C, h, w]
    z = common.sampler.q_sample(z0, int(common.sampler.timesteps[start]), randn(z0.shape, generator, z0.device))
    attention = _AttentionAverage() if record_attention else None
    out = common.sampler.sample(_guided_eps(ldm, cond, common.guidance_scale, attention), z, generator=generator,
                                callback=callback, return_trajectory=return_trajectory, start_index=start)
    z, trajectory = out if return_trajectory else (out, None)
    return _finish(ldm, z, common, trajectory, attention, ids)


@torch.no_grad()
def inpaint(ldm: "LatentDiffusion", image: torch.Tensor, mask: torch.Tensor, prompt, method: str = "blend",
            guidance_scale: float = 7.5, n_steps: int = 50, eta: float | None = None,
            generator: torch.Generator | None = None, callback: Callable | None = None, *,
            jump_length: int = 5, jump_n_sample: int = 3, mask_threshold: float = 0.5, output_type: str = "image",
            sampler: str = "ddim", record_attention: bool = False, return_trajectory: bool = False):
    """Regenerate the region where ``mask`` is 1 so that it fits ``prompt`` and the rest.

    method "blend": one pass, known latents re-noised and pasted after every step.
    method "repaint": blending plus RePaint's resampling jumps (``jump_length``,
    ``jump_n_sample``); ``eta`` defaults to 0 for blend and, with DDIM, 1 (ancestral,
    as in the paper) for repaint. ``mask_threshold``: see ``LatentDiffusion.latent_mask``.
    """
    check_choice("method", method, ("blend", "repaint"))
    image = ldm.check_image(image)
    m = ldm.latent_mask(mask, image, mask_threshold)  # [B, 1, h, w], 1 = generate
    prompts = ldm.prompts_for(prompt, image.shape[0])
    if eta is None:
        eta = 1.0 if method == "repaint" and sampler == "ddim" else 0.0
    common = _check_common(ldm, guidance_scale, n_steps, eta, generator, callback, output_type, sampler,
                           record_attention, return_trajectory)
    path = repaint_schedule(n_steps, jump_length, jump_n_sample) if method == "repaint" else None
    ids = ldm.tokenize(prompts)
    cond = ldm.text_encoder(ids.to(ldm.device)).to(ldm.dtype)
    z_known = ldm.encode(erase(image, ldm.pixel_mask(mask, image)))  # [B, C, h, w]
    steps = common.sampler

    def blend(z, t_prev):  # known region re-noised to t_prev; clean at the end
        known = z_known if t_prev < 0 else steps.q_sample(z_known, t_prev, randn(z.shape, generator, z.device))
        return m * z + (1 - m) * known

    attention = _AttentionAverage() if record_attention else None
    eps_fn = _guided_eps(ldm, cond, common.guidance_scale, attention)
    z = randn(z_known.shape, generator=generator, device=ldm.device)
    if method == "blend":
        def paste(info: StepInfo):
            z_new = blend(info.x_prev, info.t_prev)
            if callback is not None:
                info.x_prev = z_new
                replaced = callback(info)
                z_new = z_new if replaced is None else replaced
            return z_new

        out = steps.sample(eps_fn, z, generator=generator, callback=paste, return_trajectory=return_trajectory)
        z, trajectory = out if return_trajectory else (out, None)
    else:
        z, trajectory = _repaint(steps, eps_fn, z, blend, path, generator, callback, return_trajectory)
    return _finish(ldm, z, common, trajectory, attention, ids)


def _repaint(sampler, eps_fn, z, blend, path, generator, callback, return_trajectory):
    """Walk RePaint's ``path``: down one step (then paste the known region), or back up by re-noising."""
    ts = sampler.timesteps.tolist() + [-1]  # ts[i]: where index i is; ts[n] = -1 (clean)
    xs, x0s, tt = [], [], []
    step = 0
    for a, b in zip(path, path[1:]):
        if b == a + 1:  # down: one reverse step from ts[a] to ts[b], then paste the known region
            t = ts[a]
            t_batch = torch.full((z.shape[0],), t, dtype=torch.long, device=z.device)
            eps = eps_fn(z, t_batch)
            z_prev, x0 = sampler.step(eps, t, z, generator=generator)
            z_prev = blend(z_prev, ts[b])
            if return_trajectory:
                xs.append(z.cpu()), x0s.append(x0.cpu()), tt.append(t)
            if callback is not None:
                replaced = callback(StepInfo(step, t, ts[b], z, z_prev, x0, eps))
                z_prev = z_prev if replaced is None else replaced
            z, step = z_prev, step + 1
        else:  # up: re-noise from ts[a] back to the earlier, noisier ts[b] (q(z_t | z_t'))
            z = sampler.renoise(z, ts[a], ts[b], generator=generator)
    trajectory = Trajectory(tt, torch.stack(xs), torch.stack(x0s), z.cpu()) if return_trajectory else None
    return z, trajectory


# ---------------------------------------------------------------------- the components
class LatentDiffusion:
    """Stable Diffusion's components and scheduler config; the pipelines above as methods.

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

    # the pipelines (module functions whose first argument is the LatentDiffusion)
    text_to_image = text_to_image
    image_to_image = image_to_image
    inpaint = inpaint

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
        coverage = F.avg_pool2d(m, self.factor)  # [B, 1, h, w] fraction of masked pixels per cell
        return (coverage >= threshold - 1e-6).float().to(self.device)

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
    """A diffusers-layout Stable Diffusion folder (or hub id, when online) -> ``LatentDiffusion``.

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

    folder = Path(path_or_repo)
    if not folder.is_dir():
        from .env import hub_reachable

        if not hub_reachable():
            raise RuntimeError(f"{path_or_repo!r} is not a local folder and the Hugging Face hub is not "
                               f"reachable (offline): Stable Diffusion weights cannot be downloaded")
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(path_or_repo, allow_patterns=[
            "model_index.json", "*/config.json", "scheduler/scheduler_config.json", "tokenizer/*",
            "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
            "text_encoder/model.safetensors"]))
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
