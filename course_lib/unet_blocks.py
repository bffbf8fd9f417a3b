"""The pieces Stable Diffusion's UNet (and its autoencoder) are built from.

Each class is one idea, with one forward:

* ``timestep_embedding`` / ``TimestepEmbedding`` — the sinusoidal embedding of the
  diffusion step (Vaswani et al. 2017, sec. 3.5, applied to t as in Ho et al. 2020,
  "DDPM", appendix B) followed by a small MLP;
* ``ResnetBlock`` — GroupNorm → SiLU → conv, twice, with the time embedding added
  in between (Ho et al. 2020; Wu & He 2018 for GroupNorm), plus a skip;
* ``Downsample`` / ``Upsample`` — halve (strided conv) or double (nearest + conv)
  the spatial size;
* ``MidBlock`` — resnet → attention → resnet at the lowest resolution (the UNet's
  with a spatial transformer and the time embedding, the autoencoder's with
  self-attention over the pixels and no time);
* ``GEGLU`` / ``GEGLUFeedForward`` — the gated GELU MLP (Shazeer 2020, "GLU Variants
  Improve Transformer", eq. 6): ``(x W) ⊙ GELU(x V)``; GPT-2's plain GELU MLP is
  ``course_lib.transformer``'s;
* ``CrossAttentionBlock`` — the block inside a spatial transformer: pre-norm
  self-attention, cross-attention to the condition, GEGLU feed-forward (Rombach et
  al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models", sec. 3.3
  and appendix); GPT-2's block (self-attention and MLP only) is ``course_lib.transformer``'s;
* ``SpatialTransformer`` — turns a feature map into tokens, runs cross-attention blocks,
  turns the tokens back into a feature map, adds the input.

``upcast=True`` (Stable Diffusion 2.x's ``upcast_attention``) makes every attention
layer compute its scores, softmax and weighted sum in float32 when the model runs
in float16/bfloat16; see ``course_lib.attention.MultiHeadAttention``.

Sub-module names follow the diffusers checkpoints (``norm1``, ``conv1``,
``time_emb_proj``, ``attn1``, ``proj_in`` ...) so that a real checkpoint maps onto
them with a handful of renames (see ``course_lib.diffusers_io``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadAttention


# --------------------------------------------------------------------------- time
def timestep_embedding(timesteps: torch.Tensor, dim: int, flip_sin_to_cos: bool = True,
                       freq_shift: float = 0.0, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps: [B] -> [B, dim].

    With ``half = dim // 2`` frequencies ``ω_i = max_period^(-i / (half - freq_shift))``
    the embedding is ``[sin(t ω), cos(t ω)]``; Stable Diffusion uses
    ``flip_sin_to_cos=True`` (cosines first) and ``freq_shift=0``.
    """
    if timesteps.dim() != 1:
        raise ValueError(f"timesteps must be 1-D [B], got shape {tuple(timesteps.shape)}")
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(exponent / (half - freq_shift))  # [half]
    angles = timesteps.float()[:, None] * freqs[None, :]  # [B, half]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)  # [B, 2*half]
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2 == 1:  # odd width: pad one zero column
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """The MLP on top of the sinusoidal embedding: Linear → SiLU → Linear."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:  # [B, in_dim] -> [B, out_dim]
        return self.linear_2(F.silu(self.linear_1(emb)))


# ---------------------------------------------------------------------- resnets
class ResnetBlock(nn.Module):
    """GroupNorm → SiLU → conv3×3 (+ time) → GroupNorm → SiLU → conv3×3, plus a skip.

    ``temb_dim=None`` gives the autoencoder's variant, which has no time input.
    The skip is a 1×1 conv when the channel count changes.
    """

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int | None, groups: int, eps: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch, eps=eps)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_dim, out_ch) if temb_dim is not None else None
        self.norm2 = nn.GroupNorm(groups, out_ch, eps=eps)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # [B, out, H, W]
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]  # time, broadcast over H, W
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return skip + h


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3×3 conv.

    ``padding=1`` (UNet) pads all sides; ``padding=0`` (autoencoder) pads only
    right and bottom, as in the original latent-diffusion code.
    """

    def __init__(self, channels: int, padding: int = 1):
        super().__init__()
        if padding not in (0, 1):
            raise ValueError(f"padding must be 0 or 1, got {padding}")
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, C, H/2, W/2]
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class MidBlock(nn.Module):
    """At the lowest resolution: resnet → attention → resnet, at constant width.

    UNet: ``attention`` is a ``SpatialTransformer`` (reads ``cond``) and the resnets
    take the time embedding. Autoencoder: ``attention`` is single-head self-attention
    over the pixels, and there is no time (``temb_dim=None``) and no condition.
    """

    def __init__(self, channels: int, temb_dim: int | None, groups: int, eps: float, attention: nn.Module):
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock(channels, channels, temb_dim, groups, eps) for _ in range(2))
        self.attentions = nn.ModuleList([attention])

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None,
                cond: torch.Tensor | None = None) -> torch.Tensor:  # [B, C, h, w] -> [B, C, h, w]
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x) if cond is None else self.attentions[0](x, cond)
        return self.resnets[1](x, temb)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling, then a 3×3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, C, 2H, 2W]
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


# ------------------------------------------------------------------ transformer
class GEGLU(nn.Module):
    """One linear layer to twice the width, split in value and gate: value · GELU(gate)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, dim] -> [B, T, hidden]
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class GEGLUFeedForward(nn.Module):
    """GEGLU to ``mult * dim``, then back to ``dim`` (the feed-forward of SD's transformer blocks)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.geglu = GEGLU(dim, mult * dim)
        self.out = nn.Linear(mult * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.geglu(x))


class CrossAttentionBlock(nn.Module):
    """The spatial transformer's pre-norm block on image tokens x [B, HW, C] with a condition [B, L, cond_dim]:

        x = x + SelfAttn(LN(x));  x = x + CrossAttn(LN(x), cond);  x = x + GEGLU-FF(LN(x))
    """

    def __init__(self, dim: int, n_heads: int, cond_dim: int, use_sdpa: bool = True, upcast: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = MultiHeadAttention(dim, n_heads, qkv_bias=False, out_bias=True, use_sdpa=use_sdpa,
                                        upcast=upcast)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = MultiHeadAttention(dim, n_heads, kv_dim=cond_dim, qkv_bias=False, out_bias=True,
                                        use_sdpa=use_sdpa, upcast=upcast)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = GEGLUFeedForward(dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))  # image tokens attend to each other
        x = x + self.attn2(self.norm2(x), context=cond)  # ... and to the condition tokens
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Feature map → tokens → transformer blocks → feature map, plus the input.

    ``proj_in``/``proj_out`` are 1×1 convs (SD v1) or linear layers (SD v2,
    ``linear=True``). A 1×1 conv *is* a linear layer applied at every pixel, so
    both are computed the same way here: as a linear map on the tokens.
    ``upcast``: attention in float32 inside a half-precision model (SD 2.x).
    """

    def __init__(self, channels: int, n_heads: int, cond_dim: int, groups: int,
                 n_layers: int = 1, linear: bool = False, use_sdpa: bool = True, upcast: bool = False):
        super().__init__()
        self.linear = linear
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        if linear:
            self.proj_in = nn.Linear(channels, channels)
            self.proj_out = nn.Linear(channels, channels)
        else:
            self.proj_in = nn.Conv2d(channels, channels, 1)
            self.proj_out = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            CrossAttentionBlock(channels, n_heads, cond_dim, use_sdpa, upcast) for _ in range(n_layers)
        )

    @staticmethod
    def _as_linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # conv weight [C_out, C_in, 1, 1] viewed as a linear weight [C_out, C_in]
        return F.linear(x, layer.weight.flatten(1), layer.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c)  # [B, HW, C]
        tokens = self._as_linear(self.proj_in, tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, cond)
        tokens = self._as_linear(self.proj_out, tokens)
        return x + tokens.reshape(b, h, w, c).permute(0, 3, 1, 2)  # [B, C, H, W]
