"""The three Stable Diffusion pipelines, each the shape of diffusers' ``__call__``.

``text_to_image``, ``image_to_image`` and ``inpaint`` take the components (a
``course_lib.latent_diffusion.LatentDiffusion``, which also offers them as methods)
and run one call: check every argument, encode the prompt, prepare the latents,
loop over a sampler made for this call (``make_sampler``: DDIM or DDPM from the
model's ``SchedulerConfig``), decode. They keep nothing between calls.

* ``text_to_image`` — classifier-free guidance (Ho & Salimans 2022, eq. 6) from noise;
* ``image_to_image`` — SDEdit (Meng et al. 2022): noise E(x) to the timestep that
  ``strength`` ∈ (0, 1] picks and denoise from there;
* ``inpaint(method="blend")`` — after every step, put back the known region
  re-noised to the current timestep (Avrahami et al. 2023, "Blended Latent
  Diffusion"): z ← m ⊙ z + (1 − m) ⊙ q(z_t | z_known);
* ``inpaint(method="repaint")`` — RePaint (Lugmayr et al. 2022): the same blending
  plus resampling: every ``jump_length`` steps, re-noise back up that many steps
  and denoise again (``jump_n_sample`` passes in all), so the generated region has
  time to agree with the known one. Both methods first ``erase`` the masked pixels.

Plain calls return the images ``[B, 3, H, W]`` (or latents with ``output_type="latent"``);
``return_trajectory=True`` or ``record_attention=True`` (``"heads"``: every head's maps
too) return a ``PipelineResult``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from .checks import check_choice, check_int, check_number
from .device import randn
from .diffusion import ClassifierFreeGuidance, StepInfo, Trajectory, make_sampler

if TYPE_CHECKING:  # for the annotations only: latent_diffusion imports this module
    from .latent_diffusion import LatentDiffusion

__all__ = ["text_to_image", "image_to_image", "inpaint", "PipelineResult", "CrossAttentionMaps", "erase",
           "downsample_mask", "repaint_schedule", "OUTPUT_TYPES"]

OUTPUT_TYPES = ("image", "latent")


@dataclass
class CrossAttentionMaps:
    """Cross-attention per prompt token, averaged over heads, layers and sampling steps.

    maps: [B, L, h, w] (latent resolution); tokens[b]: the L token strings of prompt b;
    heads (``record_attention="heads"``): {layer name: [B, heads, L, h, w]}, every head of
    every cross-attention layer on its own, averaged over the sampling steps only.
    """

    maps: torch.Tensor
    tokens: list[list[str]]
    heads: dict[str, torch.Tensor] | None = None

    def _map(self, b: int, i: int, layer: str | None, head: int | None) -> torch.Tensor:
        if layer is None and head is None:
            return self.maps[b, i]
        if self.heads is None:
            raise ValueError("per-head maps were not recorded: sample with record_attention='heads'")
        if layer not in self.heads:
            raise ValueError(f"layer must be one of {list(self.heads)}, got {layer!r}")
        check_int("head", head, 0, self.heads[layer].shape[1] - 1)
        return self.heads[layer][b, head, i]

    def for_prompt(self, b: int = 0, skip_special: bool = True, layer: str | None = None,
                   head: int | None = None) -> list[tuple[str, torch.Tensor]]:
        """[(token, map [h, w])] for prompt b, up to its end token (specials left out);
        the average over heads and layers, or one ``head`` of one ``layer``."""
        out = []
        for i, tok in enumerate(self.tokens[b]):
            if tok in ("<|endoftext|>", "<eos>"):
                break
            if skip_special and tok in ("<|startoftext|>", "<bos>"):
                continue
            out.append((tok, self._map(b, i, layer, head)))
        return out

    def contrast(self, b: int, token: str, mask: torch.Tensor, layer: str | None = None,
                 head: int | None = None) -> float:
        """How much more prompt b's ``token`` is attended inside ``mask`` [H, W] (1 = inside)
        than outside: mean attention inside / mean outside, the map bilinearly resized to
        the mask (1: no preference)."""
        if token not in self.tokens[b]:
            raise ValueError(f"token {token!r} is not in prompt {b}: {self.tokens[b]}")
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or not 0 < (mask > 0.5).sum() < mask.numel():
            raise ValueError("mask must be a tensor [H, W] with pixels both inside (1) and outside (0)")
        m = self._map(b, self.tokens[b].index(token), layer, head)
        mask = (mask > 0.5).float()
        up = F.interpolate(m[None, None].float(), size=tuple(mask.shape), mode="bilinear", align_corners=False)[0, 0]
        inside, outside = (up * mask).sum() / mask.sum(), (up * (1 - mask)).sum() / (1 - mask).sum()
        return (inside / outside).item()

    def head_contrasts(self, b: int, token: str, mask: torch.Tensor) -> dict[tuple[str, int], float]:
        """``contrast`` of every head of every layer: {(layer name, head): contrast}
        (needs ``record_attention="heads"``). Heads specialise: one may read a word
        exactly where the shape is while the average over heads is nearly flat."""
        if self.heads is None:
            raise ValueError("per-head maps were not recorded: sample with record_attention='heads'")
        return {(layer, h): self.contrast(b, token, mask, layer, h)
                for layer, m in self.heads.items() for h in range(m.shape[1])}


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


def downsample_mask(pixel_mask: torch.Tensor, factor: int, threshold: float = 0.5) -> torch.Tensor:
    """Pixel mask [B, 1, H, W] (1 = repaint) -> latent mask [B, 1, H/f, W/f] of floats {0, 1}.

    One latent cell covers ``factor``×``factor`` pixels (f = 8 for SD); it is regenerated
    when at least ``threshold`` of them are masked: the average over the cell, compared
    with the threshold (0.5: what nearest-neighbour downsampling gives on average, the
    latent masks of Blended Latent Diffusion, Avrahami et al. 2023, sec. 3).
    """
    if not isinstance(pixel_mask, torch.Tensor) or pixel_mask.dim() != 4 or pixel_mask.shape[1] != 1:
        got = tuple(pixel_mask.shape) if isinstance(pixel_mask, torch.Tensor) else type(pixel_mask).__name__
        raise ValueError(f"pixel_mask must be a tensor [B, 1, H, W], got {got}")
    check_int("factor", factor, 1)
    h, w = pixel_mask.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"mask side {h}x{w} is not divisible by the factor {factor}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    coverage = F.avg_pool2d(pixel_mask.float(), factor)  # [B, 1, h, w] masked fraction per cell
    return (coverage >= threshold * (1 - 1e-6)).float()  # a relative slack for rounding, so 1e-6 means "any pixel"


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
    """What every pipeline checks before it samples: the sampler made for this call and the output options."""

    sampler: object  # DDIMSampler | DDPMSampler, fresh for this call
    guidance_scale: float
    output_type: str
    record_attention: bool | str  # True, or "heads" to keep every head's maps too
    return_trajectory: bool


def _check_common(ldm, guidance_scale, n_steps, eta, generator, callback, output_type, sampler,
                  record_attention, return_trajectory) -> _Common:
    check_number("guidance_scale", guidance_scale, 0.0)
    check_choice("output_type", output_type, OUTPUT_TYPES)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable (callback(info: StepInfo)) or None, got {type(callback).__name__}")
    if not isinstance(return_trajectory, bool):
        raise TypeError(f"return_trajectory must be a bool, got {return_trajectory!r}")
    if not (isinstance(record_attention, bool) or record_attention == "heads"):
        raise TypeError(f"record_attention must be a bool or 'heads' (every head's maps too), got {record_attention!r}")
    return _Common(make_sampler(ldm.scheduler, sampler, n_steps, eta), float(guidance_scale), output_type,
                   record_attention, return_trajectory)


class _AttentionAverage:
    """Sums the per-token cross-attention maps of the conditional half over the sampling steps
    (and, with ``heads``, every head's maps too)."""

    def __init__(self, heads: bool = False):
        self.total, self.count = None, 0
        self.head_total = {} if heads else None

    def add(self, unet, b: int) -> None:  # the last b rows of the UNet's batch: the conditional half
        maps = unet.cross_attention_token_maps().float()[-b:]  # [b, L, h, w]
        self.total = maps if self.total is None else self.total + maps
        self.count += 1
        if self.head_total is not None:
            for name, m in unet.cross_attention_head_maps().items():  # [b, heads, L, h, w]
                m = m.float()[-b:]
                self.head_total[name] = m if name not in self.head_total else self.head_total[name] + m

    def result(self, tokens: list[list[str]]) -> CrossAttentionMaps:
        heads = None if self.head_total is None else {k: (v / self.count).cpu() for k, v in self.head_total.items()}
        return CrossAttentionMaps((self.total / self.count).cpu(), tokens, heads)


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
            attention.add(ldm.unet, b)  # the conditional half
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
                  output_type: str = "image", sampler: str = "ddim", record_attention: bool | str = False,
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
    attention = _AttentionAverage(heads=record_attention == "heads") if record_attention else None
    out = common.sampler.sample(_guided_eps(ldm, cond, common.guidance_scale, attention), z, generator=generator,
                                callback=callback, return_trajectory=return_trajectory)
    z, trajectory = out if return_trajectory else (out, None)
    # 5. decode
    return _finish(ldm, z, common, trajectory, attention, ids)


@torch.no_grad()
def image_to_image(ldm: "LatentDiffusion", image: torch.Tensor, prompt, strength: float = 0.6,
                   guidance_scale: float = 7.5, n_steps: int = 50, eta: float = 0.0,
                   generator: torch.Generator | None = None, callback: Callable | None = None, *,
                   output_type: str = "image", sampler: str = "ddim", record_attention: bool | str = False,
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
    attention = _AttentionAverage(heads=record_attention == "heads") if record_attention else None
    out = common.sampler.sample(_guided_eps(ldm, cond, common.guidance_scale, attention), z, generator=generator,
                                callback=callback, return_trajectory=return_trajectory, start_index=start)
    z, trajectory = out if return_trajectory else (out, None)
    return _finish(ldm, z, common, trajectory, attention, ids)


@torch.no_grad()
def inpaint(ldm: "LatentDiffusion", image: torch.Tensor, mask: torch.Tensor, prompt, method: str = "blend",
            guidance_scale: float = 7.5, n_steps: int = 50, eta: float | None = None,
            generator: torch.Generator | None = None, callback: Callable | None = None, *,
            jump_length: int = 5, jump_n_sample: int = 3, mask_threshold: float = 0.5, output_type: str = "image",
            sampler: str = "ddim", record_attention: bool | str = False, return_trajectory: bool = False):
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

    attention = _AttentionAverage(heads=record_attention == "heads") if record_attention else None
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
