"""Stable Diffusion's autoencoder (the "VAE", AutoencoderKL), written out.

Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion
Models", sec. 3.1: an encoder E maps an image x [B, 3, H, W] to a latent
z [B, 4, H/8, W/8], a decoder D maps it back, and diffusion then runs on z.
The encoder outputs a diagonal Gaussian q(z|x) = N(μ, σ²) (Kingma & Welling
2014, "Auto-Encoding Variational Bayes"); training used a tiny KL weight, so
σ is small and z ≈ μ. Before diffusion the latent is multiplied by a fixed
``scaling_factor`` (0.18215 for SD v1/v2) so that it has roughly unit variance
(paper, sec. 4.3.2 and appendix D.1); ``encode_latents``/``decode_latents`` are
the only places that apply it.

Public API
----------
``AutoencoderConfig`` (dataclass): in_channels, out_channels, latent_channels,
    block_out_channels, layers_per_block, norm_num_groups, scaling_factor;
    presets ``AutoencoderConfig.sd15()`` (83,653,863 parameters), ``.small(**overrides)``.
``Autoencoder(config)``:
    ``encode(x [B,3,H,W] in [-1,1]) -> DiagonalGaussian`` over z [B, 4, H/8, W/8]
    ``decode(z) -> image [B, 3, H, W]``; ``forward(x, generator=None, sample=False)`` -> reconstruction
    ``encode_latents(x, generator=None, sample=True)`` -> scaling_factor · z  (what diffusion sees)
    ``decode_latents(latents)`` -> decode(latents / scaling_factor)
    ``Autoencoder.from_diffusers(diffusers.AutoencoderKL)``, ``Autoencoder.from_folder(path)``
``DiagonalGaussian``: ``.mean``, ``.logvar`` (clamped to [-30, 20] as in the original), ``.std``,
    ``.var``, ``.sample(generator=None)``, ``.mode()``, ``.kl()`` -> [B] (KL to N(0, I)).
``reparameterize(mean, logvar, generator=None)`` and ``kl_to_standard_normal(mean, logvar)``: the
    sampling and the KL of every VAE in the course (notebook 07's small one too).
``from_diffusers(model)``, ``load_autoencoder_folder(path)``, ``config_from_diffusers(dict)``,
``diffusers_config(AutoencoderConfig)``.

The small teaching autoencoder and VAE of notebook 07 are in ``course_lib.vae_small``; they
share this module's Gaussian (``reparameterize``, ``kl_to_standard_normal``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadAttention
from .device import randn
from .diffusers_io import RENAMES, check_supported, convert_model, load_folder
from .unet_blocks import Downsample, MidBlock, ResnetBlock, Upsample

__all__ = ["AutoencoderConfig", "Autoencoder", "DiagonalGaussian", "reparameterize", "kl_to_standard_normal",
           "SpatialSelfAttention",
           "from_diffusers", "load_autoencoder_folder", "config_from_diffusers", "diffusers_config",
           "SD_SCALING_FACTOR"]

SD_SCALING_FACTOR = 0.18215  # SD v1/v2 latent scale (rescales the latents to ≈ unit variance)
_EPS = 1e-6  # every GroupNorm of the SD autoencoder


@dataclass
class AutoencoderConfig:
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    scaling_factor: float = SD_SCALING_FACTOR

    def __post_init__(self):
        self.block_out_channels = tuple(self.block_out_channels)
        if not self.block_out_channels:
            raise ValueError("block_out_channels must name at least one level")
        for c in self.block_out_channels:
            if c % self.norm_num_groups:
                raise ValueError(f"block channel count {c} is not divisible by norm_num_groups="
                                 f"{self.norm_num_groups}")
        if self.layers_per_block < 1:
            raise ValueError("layers_per_block must be ≥ 1")

    @property
    def downsample_factor(self) -> int:
        """Image side / latent side (8 for SD: three halvings)."""
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def sd15(cls) -> "AutoencoderConfig":
        return cls()

    @classmethod
    def small(cls, **overrides) -> "AutoencoderConfig":
        base = dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8)
        base.update(overrides)
        return cls(**base)


# ------------------------------------------------------------ the Gaussian of a VAE
def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None,
                   noise: torch.Tensor | None = None) -> torch.Tensor:
    """The reparameterisation trick (Kingma & Welling 2014, eq. 10): z = μ + σ ⊙ ε, ε ~ N(0, I).

    The randomness is all in ε, so z is differentiable in μ and σ = exp(½ log σ²).
    ε is ``noise`` if given, else drawn from ``generator`` on its own device and moved
    to μ's (``course_lib.device.randn``): the same seed gives the same z on any device.
    """
    if noise is None:
        noise = randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    elif noise.shape != mean.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} must equal the mean's shape {tuple(mean.shape)}")
    return mean + torch.exp(0.5 * logvar) * noise


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ (μ² + σ² − 1 − log σ²) per example (Kingma & Welling 2014,
    appendix B), summed over every dimension but the batch: ``[B, ...] -> [B]``."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(dim=1)


class DiagonalGaussian:
    """N(mean, diag(exp(logvar))) built from moments [B, 2C, ...] (mean and log-variance stacked on dim 1)."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)  # [B, C, h, w] each
        self.logvar = logvar.clamp(-30.0, 20.0)  # as in the original: keeps exp() finite
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = μ + σ ⊙ ε (``reparameterize``), ε drawn from ``generator`` on its own device."""
        return reparameterize(self.mean, self.logvar, generator)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q ‖ N(0, I)) summed over C, h, w: [B] (``kl_to_standard_normal``)."""
        return kl_to_standard_normal(self.mean, self.logvar)


class SpatialSelfAttention(MultiHeadAttention):
    """Single-head self-attention over the pixels of a feature map, with a GroupNorm in front
    and the input added back: x + Attn(GN(x)) on [B, C, H, W]."""

    def __init__(self, channels: int, groups: int):
        super().__init__(channels, 1, qkv_bias=True, out_bias=True)
        self.group_norm = nn.GroupNorm(groups, channels, eps=_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.group_norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]
        out = super().forward(tokens)  # [B, HW, C]
        return x + out.transpose(1, 2).reshape(b, c, h, w)


def _mid_block(ch: int, groups: int) -> MidBlock:
    """resnet → self-attention over the pixels → resnet, with no time embedding."""
    return MidBlock(ch, None, groups, _EPS, SpatialSelfAttention(ch, groups))


class EncoderLevel(nn.Module):
    def __init__(self, in_ch, out_ch, n_layers, groups, downsample):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock(in_ch if i == 0 else out_ch, out_ch, None, groups, _EPS) for i in range(n_layers))
        self.downsample = Downsample(out_ch, padding=0) if downsample else None

    def forward(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.downsample is None else self.downsample(x)


class DecoderLevel(nn.Module):
    def __init__(self, in_ch, out_ch, n_layers, groups, upsample):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock(in_ch if i == 0 else out_ch, out_ch, None, groups, _EPS) for i in range(n_layers))
        self.upsample = Upsample(out_ch) if upsample else None

    def forward(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.upsample is None else self.upsample(x)


class Encoder(nn.Module):
    """x [B, 3, H, W] -> moments [B, 2·latent, H/f, W/f] (before quant_conv)."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        chs, g = cfg.block_out_channels, cfg.norm_num_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, chs[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            EncoderLevel(chs[max(i - 1, 0)], chs[i], cfg.layers_per_block, g, downsample=i < len(chs) - 1)
            for i in range(len(chs)))
        self.mid_block = _mid_block(chs[-1], g)
        self.conv_norm_out = nn.GroupNorm(g, chs[-1], eps=_EPS)
        self.conv_out = nn.Conv2d(chs[-1], 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down_blocks:
            h = level(h)
        h = self.mid_block(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class Decoder(nn.Module):
    """z [B, latent, h, w] (after post_quant_conv) -> image [B, 3, h·f, w·f]."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        chs, g = tuple(reversed(cfg.block_out_channels)), cfg.norm_num_groups
        self.conv_in = nn.Conv2d(cfg.latent_channels, chs[0], 3, padding=1)
        self.mid_block = _mid_block(chs[0], g)
        self.up_blocks = nn.ModuleList(
            DecoderLevel(chs[max(i - 1, 0)], chs[i], cfg.layers_per_block + 1, g, upsample=i < len(chs) - 1)
            for i in range(len(chs)))
        self.conv_norm_out = nn.GroupNorm(g, chs[-1], eps=_EPS)
        self.conv_out = nn.Conv2d(chs[-1], cfg.out_channels, 3, padding=1)

    def forward(self, z):
        h = self.mid_block(self.conv_in(z))
        for level in self.up_blocks:
            h = level(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class Autoencoder(nn.Module):
    """Stable Diffusion's KL-regularised autoencoder (see the module docstring)."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        if not isinstance(config, AutoencoderConfig):
            raise TypeError(f"config must be an AutoencoderConfig, got {type(config).__name__}")
        self.config = config
        c = config.latent_channels
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv2d(2 * c, 2 * c, 1)
        self.post_quant_conv = nn.Conv2d(c, c, 1)

    @property
    def scaling_factor(self) -> float:
        return self.config.scaling_factor

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        cfg = self.config
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != cfg.in_channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be an image batch [B, {cfg.in_channels}, H, W], got {shape}")
        f = cfg.downsample_factor
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"image side {x.shape[-2]}x{x.shape[-1]} is not divisible by {f}, the "
                             f"autoencoder's downsampling factor; crop or resize to a multiple of {f}")
        return DiagonalGaussian(self.quant_conv(self.encoder(x)))  # over z [B, C, H/f, W/f]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        c = self.config.latent_channels
        if not isinstance(z, torch.Tensor) or z.dim() != 4 or z.shape[1] != c:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must be a latent batch [B, {c}, h, w], got {shape}")
        return self.decoder(self.post_quant_conv(z))  # [B, 3, h·f, w·f]

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None,
                sample: bool = False) -> torch.Tensor:
        """Reconstruct x through the mean latent (or a sample of it)."""
        dist = self.encode(x)
        return self.decode(dist.sample(generator) if sample else dist.mean)

    def encode_latents(self, x: torch.Tensor, generator: torch.Generator | None = None,
                       sample: bool = True) -> torch.Tensor:
        """What latent diffusion sees: scaling_factor · z, z ~ q(z|x) (or its mean)."""
        dist = self.encode(x)
        z = dist.sample(generator) if sample else dist.mean
        return z * self.config.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Inverse of ``encode_latents``: decode(latents / scaling_factor)."""
        return self.decode(latents / self.config.scaling_factor)

    @classmethod
    def from_diffusers(cls, model) -> "Autoencoder":
        """Convert a ``diffusers.AutoencoderKL`` (the SD v1/v2 layout)."""
        return convert_model(cls, model, config_from_diffusers, DIFFUSERS_RENAMES)

    @classmethod
    def from_folder(cls, path) -> "Autoencoder":
        """Load a diffusers-layout ``vae/`` folder (``config.json`` + safetensors) strictly."""
        return load_folder(cls, path, config_from_diffusers, DIFFUSERS_RENAMES)


# ------------------------------------------------------------ diffusers import
DIFFUSERS_RENAMES = RENAMES  # diffusers name -> course name

_SUPPORTED = dict(
    down_block_types=None, up_block_types=None,  # checked below
    act_fn="silu", force_upcast=frozenset({True, False}), use_quant_conv=True, use_post_quant_conv=True,
    mid_block_add_attention=True, shift_factor=None, latents_mean=None, latents_std=None,
)


def config_from_diffusers(d: dict) -> AutoencoderConfig:
    """Translate a diffusers ``AutoencoderKL`` config into an ``AutoencoderConfig``."""
    n = len(d.get("block_out_channels", (64,)))
    down = tuple(d.get("down_block_types", ("DownEncoderBlock2D",) * n))
    up = tuple(d.get("up_block_types", ("UpDecoderBlock2D",) * n))
    check_supported({**d, "down_block_types": None, "up_block_types": None}, _SUPPORTED, "AutoencoderKL")
    if set(down) != {"DownEncoderBlock2D"} or set(up) != {"UpDecoderBlock2D"}:
        raise ValueError(f"only DownEncoderBlock2D/UpDecoderBlock2D blocks are supported, got {down}, {up}")
    return AutoencoderConfig(
        in_channels=d.get("in_channels", 3), out_channels=d.get("out_channels", 3),
        latent_channels=d.get("latent_channels", 4),
        block_out_channels=tuple(d.get("block_out_channels", (64,))),
        layers_per_block=d.get("layers_per_block", 1), norm_num_groups=d.get("norm_num_groups", 32),
        scaling_factor=d.get("scaling_factor", SD_SCALING_FACTOR))


def diffusers_config(cfg: AutoencoderConfig) -> dict:
    """The ``AutoencoderKL(**kwargs)`` with the same architecture as ``cfg``."""
    n = len(cfg.block_out_channels)
    return dict(in_channels=cfg.in_channels, out_channels=cfg.out_channels,
                latent_channels=cfg.latent_channels, block_out_channels=cfg.block_out_channels,
                down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                layers_per_block=cfg.layers_per_block, norm_num_groups=cfg.norm_num_groups,
                scaling_factor=cfg.scaling_factor)


def from_diffusers(model) -> Autoencoder:
    """``Autoencoder.from_diffusers``: convert a ``diffusers.AutoencoderKL``."""
    return Autoencoder.from_diffusers(model)


def load_autoencoder_folder(path) -> Autoencoder:
    """``Autoencoder.from_folder``: load a diffusers-layout ``vae/`` folder strictly."""
    return Autoencoder.from_folder(path)
