"""Solutions to notebook 08's exercises (UNet)."""

import math

import torch


def my_ddpm_timestep_embedding(t, dim):
    """DDPM's embedding: omega_i = 10000^(-i / (half - 1)), sines first: [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / (half - 1))  # [half]
    angles = t.float()[:, None] * freqs[None]  # [B, half]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)  # [B, dim]


def my_resnet_params(c_in, c_out, temb_dim):
    """GroupNorm(c_in) + conv3x3 + [time projection] + GroupNorm(c_out) + conv3x3 + [1x1 skip]."""
    n = 2 * c_in + (9 * c_in * c_out + c_out)  # norm1, conv1
    n += 0 if temb_dim is None else temb_dim * c_out + c_out  # time_emb_proj
    n += 2 * c_out + (9 * c_out * c_out + c_out)  # norm2, conv2
    n += 0 if c_in == c_out else c_in * c_out + c_out  # conv_shortcut
    return n


def my_skip_channels(block_out_channels, layers_per_block):
    """conv_in's output, then every resnet's output and every downsampling conv's output (not at the last level)."""
    skips = [block_out_channels[0]]  # conv_in
    for i, c in enumerate(block_out_channels):
        skips += [c] * layers_per_block
        if i < len(block_out_channels) - 1:
            skips.append(c)  # after the stride-2 conv
    return skips
