"""Stable Diffusion's denoising UNet, written out.

Ronneberger et al. 2015 ("U-Net") gave the shape: a down path that halves the
resolution level by level, an up path that doubles it back, and skip connections
that hand each down-path feature map to the up path. Ho et al. 2020 ("DDPM",
appendix B) made it a noise predictor ε_θ(x_t, t) with the timestep injected in
every residual block; Rombach et al. 2022 ("Latent Diffusion", sec. 3.3) added
cross-attention to a condition (CLIP text tokens), which is what this module is:

    ε = UNet(x_t [B, C, H, W], t [B], cond [B, L, cross_attention_dim])

Public API
----------
``UNetConfig`` (dataclass):
    in_channels, out_channels     latent channels in/out (SD: 4, 4)
    block_out_channels            channels per level, e.g. (320, 640, 1280, 1280)
    layers_per_block              residual blocks per down level (up levels have one more)
    cross_attention_levels        which levels carry spatial transformers, e.g. (True, True, True, False);
                                  the mid block always has one
    cross_attention_dim           width of the condition tokens (SD1: 768, SD2: 1024)
    num_heads                     SD1 style: a fixed number of heads (int) or one per level (tuple)
    head_dim                      SD2 style: heads = channels // head_dim at each level
                                  (set exactly one of num_heads / head_dim)
    transformer_layers            transformer blocks per spatial transformer (SD: 1)
    use_linear_projection         proj_in/out as linear layers (SD2) instead of 1×1 convs (SD1)
    norm_num_groups, norm_eps     GroupNorm settings of the residual blocks
    flip_sin_to_cos, freq_shift   sinusoidal time embedding settings (SD: True, 0)
    presets: ``UNetConfig.sd15()``, ``UNetConfig.sd2()``, ``UNetConfig.small(**overrides)``
``UNetModel(config)``:
    ``forward(x [B,C,H,W], timesteps [B] or a scalar, cond [B,L,cross_attention_dim]) -> ε [B,C,H,W]``
    ``set_attention_backend("naive" | "sdpa")``   written-out attention or PyTorch's fused kernel
    ``record_cross_attention(True)`` then ``cross_attention_maps()`` -> {layer name: [B, heads, H*W, L]}
    ``cross_attention_head_maps(size)`` -> {layer name: [B, heads, L, size, size]}, one map per head
    ``cross_attention_token_maps(size)`` -> [B, L, size, size], averaged over heads and layers
    ``UNetModel.from_diffusers(diffusers.UNet2DConditionModel)``, ``UNetModel.from_folder(path)``
``from_diffusers(model)``, ``load_unet_folder(path)``: the same as functions.
``config_from_diffusers(dict)`` / ``diffusers_config(UNetConfig)``: translate configs both ways.
Parameter counts: ``course_lib.params.count_parameters(model).total``.

Build a full-size model cheaply (no memory, no init) with ``torch.device("meta")``::

    with torch.device("meta"):
        unet = UNetModel(UNetConfig.sd15())   # count_parameters(unet).total == 859_520_964
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadAttention
from .diffusers_io import RENAMES, check_supported, convert_model, load_folder
from .unet_blocks import (Downsample, MidBlock, ResnetBlock, SpatialTransformer, TimestepEmbedding,
                          Upsample, timestep_embedding)

__all__ = ["UNetConfig", "UNetModel", "from_diffusers", "load_unet_folder", "config_from_diffusers",
           "diffusers_config", "DIFFUSERS_RENAMES"]


@dataclass
class UNetConfig:
    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    cross_attention_levels: tuple[bool, ...] = (True, True, True, False)
    cross_attention_dim: int = 768
    num_heads: int | tuple[int, ...] | None = 8
    head_dim: int | None = None
    transformer_layers: int = 1
    use_linear_projection: bool = False
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    upcast_attention: bool = False  # attention in float32 inside a half-precision model (SD 2.1)

    def __post_init__(self):
        self.block_out_channels = tuple(self.block_out_channels)
        self.cross_attention_levels = tuple(bool(a) for a in self.cross_attention_levels)
        if isinstance(self.num_heads, list):
            self.num_heads = tuple(self.num_heads)
        n = len(self.block_out_channels)
        if n < 1:
            raise ValueError("block_out_channels must name at least one level")
        if len(self.cross_attention_levels) != n:
            raise ValueError(f"cross_attention_levels has {len(self.cross_attention_levels)} entries, "
                             f"block_out_channels has {n}; give one flag per level")
        if (self.num_heads is None) == (self.head_dim is None):
            raise ValueError("set exactly one of num_heads (SD1: a fixed head count) and "
                             "head_dim (SD2: heads = channels // head_dim)")
        for c in self.block_out_channels:
            if c % self.norm_num_groups:
                raise ValueError(f"block channel count {c} is not divisible by norm_num_groups="
                                 f"{self.norm_num_groups}")
        if isinstance(self.num_heads, tuple) and len(self.num_heads) != n:
            raise ValueError(f"num_heads has {len(self.num_heads)} entries for {n} levels")
        for c, h in zip(self.block_out_channels, self.heads_per_level()):
            if h < 1 or c % h:
                raise ValueError(f"{c} channels can't be split into {h} heads")
        if self.layers_per_block < 1 or self.transformer_layers < 1:
            raise ValueError("layers_per_block and transformer_layers must be ≥ 1")

    def heads_per_level(self) -> list[int]:
        """Number of attention heads at each level (the mid block uses the last)."""
        if self.head_dim is not None:
            for c in self.block_out_channels:
                if c % self.head_dim:
                    raise ValueError(f"{c} channels are not divisible by head_dim={self.head_dim}")
            return [c // self.head_dim for c in self.block_out_channels]
        if isinstance(self.num_heads, int):
            return [self.num_heads] * len(self.block_out_channels)
        return list(self.num_heads)

    def spatial_transformer(self, channels: int, heads: int) -> SpatialTransformer:
        """The cross-attention transformer of a level with ``channels`` and ``heads``."""
        return SpatialTransformer(channels, heads, self.cross_attention_dim, self.norm_num_groups,
                                  self.transformer_layers, self.use_linear_projection,
                                  upcast=self.upcast_attention)

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.block_out_channels[0]

    @property
    def downsample_factor(self) -> int:
        """How much the deepest level is smaller than the input (H and W must be multiples)."""
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def sd15(cls) -> "UNetConfig":
        """Stable Diffusion v1.x (v1.4, v1.5): 859,520,964 parameters."""
        return cls()

    @classmethod
    def sd2(cls) -> "UNetConfig":
        """Stable Diffusion v2.x: OpenCLIP-H text (1024 wide), 64-dim heads, linear projections."""
        return cls(cross_attention_dim=1024, num_heads=None, head_dim=64, use_linear_projection=True,
                   upcast_attention=True)

    @classmethod
    def small(cls, **overrides) -> "UNetConfig":
        """A CPU-sized UNet with the same anatomy (two levels, 32/64 channels)."""
        base = dict(in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
                    cross_attention_levels=(True, True), cross_attention_dim=32, num_heads=4,
                    norm_num_groups=8)
        base.update(overrides)
        return cls(**base)


# ------------------------------------------------------------------- the levels
class DownLevel(nn.Module):
    """One level of the down path: resnets (+ spatial transformers), then halve."""

    def __init__(self, in_ch, out_ch, cfg: UNetConfig, heads: int, attention: bool, downsample: bool):
        super().__init__()
        n = cfg.layers_per_block
        self.resnets = nn.ModuleList(
            ResnetBlock(in_ch if i == 0 else out_ch, out_ch, cfg.time_embed_dim, cfg.norm_num_groups, cfg.norm_eps)
            for i in range(n))
        self.attentions = nn.ModuleList(cfg.spatial_transformer(out_ch, heads) for _ in range(n if attention else 0))
        self.downsample = Downsample(out_ch) if downsample else None

    def forward(self, x, temb, cond):
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if len(self.attentions):
                x = self.attentions[i](x, cond)
            skips.append(x)
        if self.downsample is not None:
            x = self.downsample(x)
            skips.append(x)
        return x, skips


class UpLevel(nn.Module):
    """One level of the up path: (concat a skip → resnet (+ transformer)) × (layers+1), then double."""

    def __init__(self, prev_ch, out_ch, skip_chs: list[int], cfg: UNetConfig, heads: int,
                 attention: bool, upsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock((prev_ch if i == 0 else out_ch) + s, out_ch, cfg.time_embed_dim,
                        cfg.norm_num_groups, cfg.norm_eps)
            for i, s in enumerate(skip_chs))
        self.attentions = nn.ModuleList(
            cfg.spatial_transformer(out_ch, heads) for _ in range(len(skip_chs) if attention else 0))
        self.upsample = Upsample(out_ch) if upsample else None

    def forward(self, x, skips: list, temb, cond):
        for i, resnet in enumerate(self.resnets):
            x = torch.cat([x, skips.pop()], dim=1)  # [B, C + C_skip, H, W]
            x = resnet(x, temb)
            if len(self.attentions):
                x = self.attentions[i](x, cond)
        if self.upsample is not None:
            x = self.upsample(x)
        return x


# ------------------------------------------------------------------- the model
class UNetModel(nn.Module):
    """ε_θ(x_t, t, cond): Stable Diffusion's conditional UNet (see the module docstring)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        if not isinstance(config, UNetConfig):
            raise TypeError(f"config must be a UNetConfig, got {type(config).__name__}")
        self.config = cfg = config
        chs, heads, attn = cfg.block_out_channels, cfg.heads_per_level(), cfg.cross_attention_levels
        n = len(chs)
        self.time_embedding = TimestepEmbedding(chs[0], cfg.time_embed_dim)
        self.conv_in = nn.Conv2d(cfg.in_channels, chs[0], 3, padding=1)

        self.down_blocks = nn.ModuleList()
        skip_chs = [chs[0]]  # channels of every tensor the down path saves, in order
        for i in range(n):
            last = i == n - 1
            self.down_blocks.append(DownLevel(chs[max(i - 1, 0)], chs[i], cfg, heads[i], attn[i], not last))
            skip_chs += [chs[i]] * cfg.layers_per_block + ([] if last else [chs[i]])

        self.mid_block = MidBlock(chs[-1], cfg.time_embed_dim, cfg.norm_num_groups, cfg.norm_eps,
                                  cfg.spatial_transformer(chs[-1], heads[-1]))  # resnet, transformer, resnet

        self.up_blocks = nn.ModuleList()
        prev = chs[-1]
        for i in reversed(range(n)):  # deepest level first
            mine = [skip_chs.pop() for _ in range(cfg.layers_per_block + 1)]
            self.up_blocks.append(UpLevel(prev, chs[i], mine, cfg, heads[i], attn[i], upsample=i > 0))
            prev = chs[i]

        self.conv_norm_out = nn.GroupNorm(cfg.norm_num_groups, chs[0], eps=cfg.norm_eps)
        self.conv_out = nn.Conv2d(chs[0], cfg.out_channels, 3, padding=1)

    # ---- inputs
    def _check_inputs(self, x, timesteps, cond):
        cfg = self.config
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != cfg.in_channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be [B, {cfg.in_channels}, H, W], got {shape}")
        b, _, h, w = x.shape
        f = cfg.downsample_factor
        if h % f or w % f:
            raise ValueError(
                f"latent side {h}x{w} can't be halved {len(cfg.block_out_channels) - 1} times: "
                f"H and W must be multiples of {f}")
        if not isinstance(timesteps, torch.Tensor):
            if not isinstance(timesteps, (int, float)) or isinstance(timesteps, bool):
                raise TypeError(f"timesteps must be a number or a tensor, got {type(timesteps).__name__}")
            timesteps = torch.tensor([timesteps], device=x.device)
        if timesteps.dim() == 0:
            timesteps = timesteps[None]
        if timesteps.dim() != 1 or timesteps.shape[0] not in (1, b):
            raise ValueError(f"timesteps must be a scalar, [1] or [B={b}], got {tuple(timesteps.shape)}")
        timesteps = timesteps.to(x.device).expand(b)
        if not isinstance(cond, torch.Tensor) or cond.dim() != 3:
            shape = tuple(cond.shape) if isinstance(cond, torch.Tensor) else type(cond).__name__
            raise ValueError(f"cond must be [B, L, cross_attention_dim={cfg.cross_attention_dim}], got {shape}")
        if cond.shape[-1] != cfg.cross_attention_dim:
            raise ValueError(f"cond width {cond.shape[-1]} != cross_attention_dim={cfg.cross_attention_dim}")
        if cond.shape[0] != b:
            raise ValueError(f"cond batch {cond.shape[0]} != x batch {b}")
        return timesteps

    def forward(self, x: torch.Tensor, timesteps, cond: torch.Tensor) -> torch.Tensor:
        t = self._check_inputs(x, timesteps, cond)  # [B]
        cfg = self.config
        self._last_hw = x.shape[-2:]
        t_freq = timestep_embedding(t, cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift)
        temb = self.time_embedding(t_freq.to(x.dtype))  # [B, 4*C0]

        h = self.conv_in(x)  # [B, C0, H, W]
        skips = [h]
        for level in self.down_blocks:
            h, s = level(h, temb, cond)
            skips += s
        h = self.mid_block(h, temb, cond)  # [B, C_last, H/f, W/f]
        for level in self.up_blocks:
            h = level(h, skips, temb, cond)
        return self.conv_out(F.silu(self.conv_norm_out(h)))  # [B, C_out, H, W]

    # ---- attention switches and cross-attention maps
    def set_attention_backend(self, backend: str) -> "UNetModel":
        """``"naive"``: the written-out softmax(QKᵀ/√d)V; ``"sdpa"``: PyTorch's fused kernel."""
        if backend not in ("naive", "sdpa"):
            raise ValueError(f"attention backend must be 'naive' or 'sdpa', got {backend!r}")
        for m in self.modules():
            if isinstance(m, MultiHeadAttention):
                m.use_sdpa = backend == "sdpa"
        return self

    def cross_attention_layers(self) -> dict[str, MultiHeadAttention]:
        """Every cross-attention (``attn2``) layer, by module name."""
        return {name: m for name, m in self.named_modules() if name.endswith("attn2")}

    def record_cross_attention(self, on: bool = True) -> "UNetModel":
        """Make every cross-attention layer keep its weights of the next forward."""
        for m in self.cross_attention_layers().values():
            m.record_weights = bool(on)
            if not on:
                m.last_weights = None
        return self

    def cross_attention_maps(self) -> dict[str, torch.Tensor]:
        """{layer name: weights [B, heads, H_l*W_l, L]} from the last forward while recording."""
        maps = {k: m.last_weights for k, m in self.cross_attention_layers().items()}
        if any(v is None for v in maps.values()):
            raise RuntimeError("no cross-attention weights recorded: call record_cross_attention(True) "
                               "and run a forward first")
        return maps

    def _resized(self, weights: torch.Tensor, size: int | None) -> torch.Tensor:
        """Attention weights [B, X, H_l*W_l, L] of one layer -> maps [B, X, L, size, size]."""
        h0, w0 = (int(s) for s in self._last_hw)  # the latent size
        size = (h0, w0) if size is None else (size, size)
        b, x, hw, n_tok = weights.shape
        scale = int(round((h0 * w0 / hw) ** 0.5))  # this layer is `scale`× coarser than the latent
        m = weights.transpose(2, 3).reshape(b, x * n_tok, h0 // scale, w0 // scale)
        return F.interpolate(m, size=size, mode="bilinear", align_corners=False).view(b, x, n_tok, *size)

    def cross_attention_head_maps(self, size: int | None = None) -> dict[str, torch.Tensor]:
        """{layer name: [B, heads, L, size, size]}: one map per head and token, from the last
        forward while recording, resized to ``size`` (default: the latent size)."""
        return {name: self._resized(w, size) for name, w in self.cross_attention_maps().items()}

    def cross_attention_token_maps(self, size: int | None = None) -> torch.Tensor:
        """Per-token maps [B, L, size, size]: every layer's weights, averaged over heads,
        resized to ``size`` (default: the latent size) and averaged over layers."""
        maps = self.cross_attention_maps()
        return sum(self._resized(w.mean(1, keepdim=True), size)[:, 0] for w in maps.values()) / len(maps)

    # ---- loading
    @classmethod
    def from_diffusers(cls, model) -> "UNetModel":
        """Convert a ``diffusers.UNet2DConditionModel`` (SD v1/v2 layouts)."""
        return convert_model(cls, model, config_from_diffusers, DIFFUSERS_RENAMES)

    @classmethod
    def from_folder(cls, path) -> "UNetModel":
        """Load a diffusers-layout folder (``config.json`` + ``diffusion_pytorch_model.safetensors``)."""
        return load_folder(cls, path, config_from_diffusers, DIFFUSERS_RENAMES)


# ------------------------------------------------------------ diffusers import
# diffusers name -> course name (applied as substring replacements)
DIFFUSERS_RENAMES = RENAMES + [(".ff.net.0.proj.", ".ff.geglu.proj."), (".ff.net.2.", ".ff.out.")]

_SUPPORTED = dict(
    center_input_sample=False,
    mid_block_type="UNetMidBlock2DCrossAttn", only_cross_attention=frozenset({False}),
    downsample_padding=1, mid_block_scale_factor=1, act_fn="silu", dual_cross_attention=False,
    class_embed_type=None, addition_embed_type=None, num_class_embeds=None, encoder_hid_dim=None,
    resnet_time_scale_shift="default", resnet_skip_time_act=False, resnet_out_scale_factor=1.0,
    time_embedding_type="positional", time_embedding_dim=None, time_embedding_act_fn=None,
    timestep_post_act=None, time_cond_proj_dim=None, conv_in_kernel=3, conv_out_kernel=3,
    attention_type="default", class_embeddings_concat=False,
    mid_block_only_cross_attention=frozenset({None, False}), cross_attention_norm=None,
    reverse_transformer_layers_per_block=None,
)
_DOWN = {"CrossAttnDownBlock2D": True, "DownBlock2D": False}
_UP = {"CrossAttnUpBlock2D": True, "UpBlock2D": False}


def config_from_diffusers(d: dict) -> UNetConfig:
    """Translate a diffusers ``UNet2DConditionModel`` config into a ``UNetConfig``."""
    check_supported(d, _SUPPORTED, "UNet2DConditionModel")
    down = list(d.get("down_block_types", ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)))
    up = list(d.get("up_block_types", ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3))
    for kind in down + up:
        if kind not in _DOWN and kind not in _UP:
            raise ValueError(f"block type {kind!r} is not supported (only {sorted(_DOWN) + sorted(_UP)})")
    levels = tuple(_DOWN[k] for k in down)
    if tuple(_UP[k] for k in reversed(up)) != levels:
        raise ValueError(f"up_block_types {up} must mirror down_block_types {down}")
    for key in ("layers_per_block", "transformer_layers_per_block", "cross_attention_dim"):
        if isinstance(d.get(key), (list, tuple)) and len(set(d[key])) > 1:
            raise ValueError(f"per-level {key}={d[key]} is not supported (one value for all levels)")
        if isinstance(d.get(key), (list, tuple)):
            d = {**d, key: d[key][0]}
    heads = d.get("num_attention_heads") or d.get("attention_head_dim", 8)  # diffusers' naming quirk
    return UNetConfig(
        in_channels=d.get("in_channels", 4), out_channels=d.get("out_channels", 4),
        block_out_channels=tuple(d.get("block_out_channels", (320, 640, 1280, 1280))),
        layers_per_block=d.get("layers_per_block", 2), cross_attention_levels=levels,
        cross_attention_dim=d.get("cross_attention_dim", 1280),
        num_heads=tuple(heads) if isinstance(heads, (list, tuple)) else heads,
        transformer_layers=d.get("transformer_layers_per_block", 1),
        use_linear_projection=d.get("use_linear_projection", False),
        norm_num_groups=d.get("norm_num_groups", 32), norm_eps=d.get("norm_eps", 1e-5),
        flip_sin_to_cos=d.get("flip_sin_to_cos", True), freq_shift=d.get("freq_shift", 0),
        upcast_attention=d.get("upcast_attention", False))


def diffusers_config(cfg: UNetConfig) -> dict:
    """The ``UNet2DConditionModel(**kwargs)`` that has the same architecture as ``cfg``."""
    return dict(
        in_channels=cfg.in_channels, out_channels=cfg.out_channels,
        block_out_channels=cfg.block_out_channels, layers_per_block=cfg.layers_per_block,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.cross_attention_levels),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.cross_attention_levels)),
        cross_attention_dim=cfg.cross_attention_dim, attention_head_dim=tuple(cfg.heads_per_level()),
        transformer_layers_per_block=cfg.transformer_layers, use_linear_projection=cfg.use_linear_projection,
        norm_num_groups=cfg.norm_num_groups, norm_eps=cfg.norm_eps, flip_sin_to_cos=cfg.flip_sin_to_cos,
        freq_shift=cfg.freq_shift, upcast_attention=cfg.upcast_attention)


def from_diffusers(model) -> UNetModel:
    """``UNetModel.from_diffusers``: convert a ``diffusers.UNet2DConditionModel``."""
    return UNetModel.from_diffusers(model)


def load_unet_folder(path) -> UNetModel:
    """``UNetModel.from_folder``: load a diffusers-layout ``unet/`` folder strictly."""
    return UNetModel.from_folder(path)
