"""Notebook 08 (UNet): checks for DDPM's time embedding, a residual block's size and the UNet's skips."""

from __future__ import annotations

import torch

from ..params import count_parameters
from ..unet import UNetConfig, UNetModel
from ..unet_blocks import ResnetBlock, timestep_embedding
from .core import Case, generator, register, require_signature, run_cases

__all__ = ["check_ddpm_timestep_embedding", "check_resnet_params", "check_skip_channels"]


def check_ddpm_timestep_embedding(fn, seed: int = 0) -> bool:
    """Check ``fn(t, dim)``: ``[B]`` -> ``[B, dim]``, the time embedding of the original DDPM code.

    Ho et al. 2020's ``get_timestep_embedding``: ``half = dim // 2`` frequencies
    ``ω_i = 10000^(-i / (half - 1))`` and the *sines first*, ``[sin(t ω) | cos(t ω)]``
    (Stable Diffusion puts the cosines first and divides by ``half``). Reference:
    ``timestep_embedding(t, dim, flip_sin_to_cos=False, freq_shift=1)``. Cases: even widths.
    """
    require_signature(fn, "fn(t, dim)", 2)
    g = generator(seed)
    cases = []
    for label, t, dim in [("t = 0..9, dim=8", torch.arange(10), 8),
                          ("random integer t, dim=32", torch.randint(0, 1000, (6,), generator=g), 32),
                          ("fractional t, dim=64", torch.rand(5, generator=g) * 999, 64),
                          ("t = 0, 500, 999, dim=320", torch.tensor([0, 500, 999]), 320)]:
        want = timestep_embedding(t, dim, flip_sin_to_cos=False, freq_shift=1)
        cases.append(Case(label, (t, dim), want))
    return run_cases("check_ddpm_timestep_embedding", fn, cases, atol=1e-4, rtol=1e-4,
                     hint="ω_i = exp(−ln(10000) · i / (half − 1)) for i = 0..half−1; concatenate sin first, then cos")


def _exact(got, expected) -> str | None:
    """None when ``got`` equals ``expected`` (an int or a list of ints) exactly; otherwise what differs."""
    if isinstance(got, torch.Tensor):
        got = got.tolist()
    if isinstance(expected, list):
        if not isinstance(got, (list, tuple)):
            return f"returned {type(got).__name__}, expected a list of ints"
        if len(got) != len(expected):
            return f"{len(got)} entries, expected {len(expected)}"
        wrong = [i for i, (a, b) in enumerate(zip(got, expected)) if a != b]
        return None if not wrong else f"{len(wrong)} of {len(expected)} entries wrong, first at index {wrong[0]}"
    if isinstance(got, bool) or not isinstance(got, int):
        return f"returned {type(got).__name__}, expected an int"
    if got != expected:
        return f"got {got:,}, expected {expected:,} (off by {got - expected:+,})"
    return None


def check_resnet_params(fn) -> bool:
    """Check ``fn(c_in, c_out, temb_dim)`` -> the parameter count of ``ResnetBlock(c_in, c_out, temb_dim, ...)``.

    Two GroupNorms (a scale and a shift per channel), two 3×3 convs, the time projection
    (none when ``temb_dim`` is None: the autoencoder's block) and the 1×1 skip conv (only
    when ``c_in != c_out``). Every layer has a bias. Cases: SD v1.5's sizes and small ones.
    """
    require_signature(fn, "fn(c_in, c_out, temb_dim)", 3)
    cases = []
    for c_in, c_out, temb in [(320, 640, 1280), (640, 640, 1280), (2560, 1280, 1280), (64, 32, 256),
                              (128, 128, None), (256, 512, None)]:
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            want = count_parameters(ResnetBlock(c_in, c_out, temb, 32, 1e-5)).total
        cases.append(Case(f"c_in={c_in} c_out={c_out} temb_dim={temb}", (c_in, c_out, temb), want))
    return run_cases("check_resnet_params", fn, cases, compare=_exact,
                     hint="a conv has out·in·k² weights + out biases; GroupNorm has 2 per channel; "
                          "the skip and the time projection exist only sometimes")


def skip_channels_of(model: UNetModel) -> list[int]:
    """The channel counts of the feature maps the down path saves, in the order saved, read off the
    up path of a built model: each up-path resnet's input minus what arrives from below."""
    used = []  # in the order the up path consumes them (the last saved first)
    prev = model.mid_block.resnets[-1].conv2.out_channels
    for level in model.up_blocks:
        for resnet in level.resnets:
            used.append(resnet.norm1.num_channels - prev)
            prev = resnet.conv2.out_channels
    return used[::-1]


def check_skip_channels(fn) -> bool:
    """Check ``fn(block_out_channels, layers_per_block)`` -> the list of channel counts of every
    feature map the UNet's down path saves for the up path, in the order they are saved
    (``conv_in``'s output first). Reference: read off a ``UNetModel`` built on the meta device."""
    require_signature(fn, "fn(block_out_channels, layers_per_block)", 2)
    cases = []
    for chs, n in [((320, 640, 1280, 1280), 2), ((32, 64), 1), ((64, 128, 256), 3), ((32, 32, 64, 64, 128), 2)]:
        cfg = UNetConfig(block_out_channels=chs, layers_per_block=n, cross_attention_levels=(False,) * len(chs),
                         num_heads=1, norm_num_groups=32)
        with torch.device("meta"):
            want = skip_channels_of(UNetModel(cfg))
        cases.append(Case(f"block_out_channels={chs}, layers_per_block={n}", (chs, n), want))
    return run_cases("check_skip_channels", fn, cases, compare=_exact,
                     hint="follow every tensor that UNetModel.forward and DownLevel.forward append to `skips`; "
                          "does the last level downsample?")


register(check_ddpm_timestep_embedding, "08", "nb08_unet:my_ddpm_timestep_embedding")
register(check_resnet_params, "08", "nb08_unet:my_resnet_params")
register(check_skip_channels, "08", "nb08_unet:my_skip_channels")
