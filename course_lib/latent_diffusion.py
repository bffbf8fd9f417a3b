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

Cross-attention maps (what each prompt token looks at, per latent pixel) are
recorded with ``record_attention=True`` and kept in ``ldm.attention``.

``load_stable_diffusion(path_or_repo)`` reads a diffusers-layout folder (``unet/``,
``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``) into these classes;
a hub id (``stable-diffusion-v1-5/stable-diffusion-v1-5``) is downloaded when the
hub is reachable. On a GPU the weights are cast to float16.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .diffusion import ClassifierFreeGuidance, DDIMSampler, StepInfo, Trajectory, make_betas

__all__ = ["LatentDiffusion", "CrossAttentionMaps", "load_stable_diffusion", "SD15_REPO", "repaint_schedule",
           "erase"]

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
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
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


class LatentDiffusion:
    """Stable-Diffusion-style text-to-image, image-to-image and inpainting.

    autoencoder: ``course_lib.autoencoder.Autoencoder``; unet: ``course_lib.unet.UNetModel``;
    text_encoder: ``course_lib.clip.CLIPTextEncoder``; tokenizer: a ``transformers.CLIPTokenizer``
    or a ``course_lib.clip.WordTokenizer``; betas: the training noise schedule ``[N]``.
    Images are ``[B, 3, H, W]`` in [-1, 1]; H and W must be multiples of the
    autoencoder's downsampling factor (8 for SD).
    """

    def __init__(self, autoencoder, unet, text_encoder, tokenizer, betas: torch.Tensor,
                 image_size: int | None = None):
        self.autoencoder, self.unet, self.text_encoder, self.tokenizer = autoencoder, unet, text_encoder, tokenizer
        self.betas = betas
        self.factor = autoencoder.config.downsample_factor
        self.scaling_factor = float(autoencoder.config.scaling_factor)
        self.latent_channels = autoencoder.config.latent_channels
        self.image_size = image_size if image_size is not None else 64 * self.factor
        self.attention: CrossAttentionMaps | None = None  # filled by record_attention=True
        for m in (autoencoder, unet, text_encoder):
            m.eval()

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @staticmethod
    def _check_prompts(prompts) -> list[str]:
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)):
            raise TypeError(f"prompts must be a str or a list of str, got {type(prompts).__name__}")
        if len(prompts) == 0:
            raise ValueError("the prompt list is empty: give at least one prompt")
        if not all(isinstance(p, str) for p in prompts):
            raise TypeError("every prompt must be a str")
        return list(prompts)

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
        ids = self.tokenize(self._check_prompts(prompts)).to(self.device)
        return self.text_encoder(ids).to(self.dtype)

    def _check_image(self, image) -> torch.Tensor:
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

    def _check_size(self, height, width) -> tuple[int, int]:
        height = self.image_size if height is None else height
        width = self.image_size if width is None else width
        for name, v in (("height", height), ("width", width)):
            if isinstance(v, bool) or not isinstance(v, int) or v < self.factor or v % self.factor:
                raise ValueError(f"{name}={v!r}: image side not divisible by {self.factor} (the autoencoder's "
                                 f"downsampling factor); use a positive multiple of {self.factor}")
        return height, width

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Image [B, 3, H, W] -> scaled latents s · μ(x) [B, C, H/f, W/f] (the posterior mean)."""
        image = self._check_image(image).to(self.device, self.autoencoder_dtype)
        return self.autoencoder.encode(image).mean.float() * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> image [B, 3, H, W] (float32, not clamped)."""
        z = (latents / self.scaling_factor).to(self.device, self.autoencoder_dtype)
        return self.autoencoder.decode(z).float()

    @property
    def autoencoder_dtype(self) -> torch.dtype:
        return next(self.autoencoder.parameters()).dtype

    def _noise(self, shape, generator) -> torch.Tensor:
        g_device = generator.device if generator is not None else torch.device("cpu")
        return torch.randn(shape, generator=generator, device=g_device, dtype=torch.float32).to(self.device)

    def _sampler(self, n_steps: int, eta: float) -> DDIMSampler:
        return DDIMSampler(self.betas, n_steps=n_steps, eta=eta)

    def _eps_fn(self, cond: torch.Tensor, guidance_scale: float, record: bool) -> Callable:
        """ε(z, t) with classifier-free guidance; records cross-attention of the conditional half."""
        uncond = self.encode_prompts([""])
        guided = ClassifierFreeGuidance(self.unet, cond, uncond, guidance_scale)
        b = cond.shape[0]
        self._attn_sum, self._attn_count = None, 0
        self.unet.record_cross_attention(record)

        def eps_fn(z, t):
            eps = guided(z.to(self.dtype), t).float()
            if record:
                maps = self.unet.cross_attention_token_maps().float()  # [B or 2B, L, h, w]
                maps = maps[-b:]  # the conditional half (guided runs [uncond; cond])
                self._attn_sum = maps if self._attn_sum is None else self._attn_sum + maps
                self._attn_count += 1
            return eps

        return eps_fn

    def _finish(self, ids, record: bool) -> None:
        if record:
            self.unet.record_cross_attention(False)
            self.attention = CrossAttentionMaps((self._attn_sum / self._attn_count).cpu(), self.tokens(ids))

    def _output(self, z, traj, output_type, return_trajectory):
        if output_type not in ("image", "latent"):
            raise ValueError(f"output_type must be 'image' or 'latent', got {output_type!r}")
        out = z if output_type == "latent" else self.decode(z)
        return (out, traj) if return_trajectory else out

    def _prompts_for(self, prompts, b: int) -> list[str]:
        prompts = self._check_prompts(prompts)
        if len(prompts) == 1 and b > 1:
            prompts = prompts * b
        if len(prompts) != b:
            raise ValueError(f"got {len(prompts)} prompts for {b} images; give one prompt or one per image")
        return prompts

    # ------------------------------------------------------------------ text to image
    @torch.no_grad()
    def text_to_image(self, prompts, guidance_scale: float = 7.5, n_steps: int = 50, eta: float = 0.0,
                      generator: torch.Generator | None = None, callback: Callable | None = None, *,
                      height: int | None = None, width: int | None = None, latents: torch.Tensor | None = None,
                      output_type: str = "image", record_attention: bool = False,
                      return_trajectory: bool = False):
        """Sample images for ``prompts`` (DDIM with ``n_steps`` and ``eta``, guidance ``w``).

        ``latents`` (optional): the starting noise z_T [B, C, H/f, W/f]; otherwise drawn
        from ``generator``. ``callback(info: StepInfo)`` runs after each step (latents);
        ``output_type="latent"`` returns z_0 instead of the decoded images.
        """
        prompts = self._check_prompts(prompts)
        height, width = self._check_size(height, width)
        shape = (len(prompts), self.latent_channels, height // self.factor, width // self.factor)
        if latents is None:
            latents = self._noise(shape, generator)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must be {shape} for {len(prompts)} prompts at {height}x{width}, "
                             f"got {tuple(latents.shape)}")
        ids = self.tokenize(prompts)
        cond = self.text_encoder(ids.to(self.device)).to(self.dtype)
        eps_fn = self._eps_fn(cond, guidance_scale, record_attention)
        sampler = self._sampler(n_steps, eta)
        z, traj = sampler.sample(eps_fn, latents.to(self.device).float(), generator=generator,
                                 callback=callback, return_trajectory=True)
        self._finish(ids, record_attention)
        return self._output(z, traj, output_type, return_trajectory)

    # ------------------------------------------------------------------ image to image
    @torch.no_grad()
    def image_to_image(self, image: torch.Tensor, prompt, strength: float = 0.6, guidance_scale: float = 7.5,
                       n_steps: int = 50, eta: float = 0.0, generator: torch.Generator | None = None,
                       callback: Callable | None = None, *, output_type: str = "image",
                       record_attention: bool = False, return_trajectory: bool = False):
        """SDEdit: encode ``image``, noise it to the timestep ``strength`` of the way up, denoise.

        strength ∈ (0, 1]: 1 ignores the image (pure noise), small values keep it.
        As in diffusers, ``int(n_steps · strength)`` steps are run.
        """
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
            raise ValueError(f"strength must be in (0, 1] (0 < strength ≤ 1), got {strength!r}")
        image = self._check_image(image)
        prompts = self._prompts_for(prompt, image.shape[0])
        sampler = self._sampler(n_steps, eta)
        start = sampler.start_index(strength)
        if start >= n_steps:
            raise ValueError(f"strength={strength} with n_steps={n_steps} leaves no step to run "
                             f"(int(n_steps·strength) = 0); raise strength or n_steps")
        z0 = self.encode(image)
        t_start = int(sampler.timesteps[start])
        z = sampler.q_sample(z0, t_start, self._noise(z0.shape, generator))
        ids = self.tokenize(prompts)
        cond = self.text_encoder(ids.to(self.device)).to(self.dtype)
        eps_fn = self._eps_fn(cond, guidance_scale, record_attention)
        z, traj = sampler.sample(eps_fn, z, generator=generator, callback=callback,
                                 return_trajectory=True, start_index=start)
        self._finish(ids, record_attention)
        return self._output(z, traj, output_type, return_trajectory)

    # ------------------------------------------------------------------ inpainting
    def latent_mask(self, mask: torch.Tensor, image: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
        """Pixel mask -> latent mask [B, 1, H/f, W/f] (1 = generate).

        One latent cell covers f×f pixels; it is regenerated when at least ``threshold``
        of them are masked (0.5: the nearest-neighbour downsampling SD's inpainting uses).
        A small threshold (e.g. 1e-6: "any pixel") leaves no masked pixel unregenerated
        but also regenerates more of the kept region around the mask.
        """
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
        m = self._pixel_mask(mask, image)  # [B, 1, H, W]
        coverage = F.avg_pool2d(m, self.factor)  # [B, 1, h, w] fraction of masked pixels per cell
        return (coverage >= threshold - 1e-6).float().to(self.device)

    def _pixel_mask(self, mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
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

    @torch.no_grad()
    def inpaint(self, image: torch.Tensor, mask: torch.Tensor, prompt, method: str = "blend",
                guidance_scale: float = 7.5, n_steps: int = 50, eta: float | None = None,
                generator: torch.Generator | None = None, callback: Callable | None = None, *,
                jump_length: int = 5, jump_n_sample: int = 3, mask_threshold: float = 0.5,
                output_type: str = "image",
                record_attention: bool = False, return_trajectory: bool = False):
        """Regenerate the region where ``mask`` is 1 so that it fits ``prompt`` and the rest.

        method "blend": one pass, known latents re-noised and pasted after every step.
        method "repaint": blending plus RePaint's resampling jumps (``jump_length``,
        ``jump_n_sample``); ``eta`` defaults to 0 for blend and 1 (ancestral, as in the
        paper) for repaint. ``mask_threshold``: see ``latent_mask``.
        """
        if method not in ("blend", "repaint"):
            raise ValueError(f"method must be 'blend' or 'repaint', got {method!r}")
        image = self._check_image(image)
        m = self.latent_mask(mask, image, mask_threshold)  # [B, 1, h, w]
        prompts = self._prompts_for(prompt, image.shape[0])
        eta = (0.0 if method == "blend" else 1.0) if eta is None else eta
        sampler = self._sampler(n_steps, eta)
        z_known = self.encode(erase(image, self._pixel_mask(mask, image)))  # [B, C, h, w]
        ids = self.tokenize(prompts)
        cond = self.text_encoder(ids.to(self.device)).to(self.dtype)
        eps_fn = self._eps_fn(cond, guidance_scale, record_attention)

        def blend(z, t_prev):  # known region re-noised to t_prev; clean at the end
            known = z_known if t_prev < 0 else sampler.q_sample(z_known, t_prev, self._noise(z_known.shape, generator))
            return m * z + (1 - m) * known

        z = self._noise(z_known.shape, generator)
        if method == "blend":
            def paste(info: StepInfo):
                z_new = blend(info.x_prev, info.t_prev)
                if callback is not None:
                    info.x_prev = z_new
                    replaced = callback(info)
                    z_new = z_new if replaced is None else replaced
                return z_new

            z, traj = sampler.sample(eps_fn, z, generator=generator, callback=paste, return_trajectory=True)
        else:
            z, traj = self._repaint(sampler, eps_fn, z, blend, generator, callback, jump_length, jump_n_sample)
        self._finish(ids, record_attention)
        return self._output(z, traj, output_type, return_trajectory)

    def _repaint(self, sampler, eps_fn, z, blend, generator, callback, jump_length, jump_n_sample):
        ts = sampler.timesteps.tolist() + [-1]  # ts[i]: where index i is; ts[n] = -1 (clean)
        path = repaint_schedule(len(ts) - 1, jump_length, jump_n_sample)
        xs, x0s, tt = [], [], []
        step = 0
        for a, b in zip(path, path[1:]):
            if b == a + 1:  # down: one reverse step from ts[a] to ts[b], then paste the known region
                t = ts[a]
                t_batch = torch.full((z.shape[0],), t, dtype=torch.long, device=z.device)
                eps = eps_fn(z, t_batch)
                z_prev, x0 = sampler.step(eps, t, z, generator=generator)
                z_prev = blend(z_prev, ts[b])
                xs.append(z.cpu()), x0s.append(x0.cpu()), tt.append(t)
                if callback is not None:
                    replaced = callback(StepInfo(step, t, ts[b], z, z_prev, x0, eps))
                    z_prev = z_prev if replaced is None else replaced
                z, step = z_prev, step + 1
            else:  # up: re-noise from ts[a] back to the earlier, noisier ts[b] (q(z_t | z_t'))
                z = sampler.renoise(z, ts[a], ts[b], generator=generator)
        return z, Trajectory(tt, torch.stack(xs), torch.stack(x0s), z.cpu())


# ---------------------------------------------------------------------- loading SD v1.5

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


def _betas_from_scheduler(folder: Path) -> torch.Tensor:
    cfg = {}
    path = folder / "scheduler_config.json"
    if path.exists():
        cfg = json.loads(path.read_text())
    kind = cfg.get("beta_schedule", "scaled_linear")
    kinds = {"scaled_linear": "scaled_linear", "linear": "linear", "squaredcos_cap_v2": "cosine"}
    if kind not in kinds:
        raise ValueError(f"beta_schedule {kind!r} is not supported; allowed: {', '.join(kinds)}")
    n = cfg.get("num_train_timesteps", 1000)
    if kinds[kind] == "cosine":
        return make_betas("cosine", n)
    return make_betas(kinds[kind], n, cfg.get("beta_start", 0.00085), cfg.get("beta_end", 0.012))


def load_stable_diffusion(path_or_repo: str = SD15_REPO, device: torch.device | str | None = None,
                          dtype: torch.dtype | None = None) -> LatentDiffusion:
    """A diffusers-layout Stable Diffusion folder or hub id -> ``LatentDiffusion``.

    A hub id (SD 1.x, SD 2.x, any diffusers-layout repo) is found in the local Hugging Face
    cache, offline included, or downloaded when the hub is reachable (``course_lib.hub``).

    The folder holds ``unet/``, ``vae/``, ``text_encoder/`` (``model.safetensors``),
    ``tokenizer/`` and optionally ``scheduler/``; every component is loaded strictly
    into the course's classes. ``dtype`` defaults to float16 on CUDA, float32 elsewhere.
    """
    from .autoencoder import load_autoencoder_folder
    from .clip import load_clip_tokenizer
    from .device import get_device
    from .unet import load_unet_folder

    from .hub import STABLE_DIFFUSION_FILES, resolve_repo

    folder = resolve_repo(path_or_repo, STABLE_DIFFUSION_FILES)  # a folder, the HF cache, or a download
    missing = [d for d in ("unet", "vae", "text_encoder", "tokenizer") if not (folder / d).is_dir()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a Stable Diffusion folder: missing {', '.join(missing)}/")
    device = get_device() if device is None else torch.device(device)
    dtype = (torch.float16 if device.type == "cuda" else torch.float32) if dtype is None else dtype
    unet = load_unet_folder(folder / "unet").to(device, dtype)
    vae = load_autoencoder_folder(folder / "vae").to(device, dtype)
    text_encoder = _load_text_encoder(folder / "text_encoder").to(device, dtype)
    tokenizer = load_clip_tokenizer(str(folder / "tokenizer"))
    sample_size = json.loads((folder / "unet" / "config.json").read_text()).get("sample_size", 64)
    image_size = sample_size * vae.config.downsample_factor
    return LatentDiffusion(vae, unet, text_encoder, tokenizer, _betas_from_scheduler(folder / "scheduler"),
                           image_size=image_size)
