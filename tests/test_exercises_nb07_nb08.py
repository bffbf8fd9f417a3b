"""Notebook 07 and 08 exercise checks: plausible wrong answers fail with a reason, right ones pass."""

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import exercises as ex


# ------------------------------------------------------------------ 07: KL between two Gaussians

def test_kl_gaussians_rejects_the_standard_normal_formula(capsys):
    def kl_to_standard(mu, logvar, m, log_s2):  # ignores the prior: right only for N(0, 1)
        return 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(-1)

    assert not ex.check_kl_gaussians(kl_to_standard)
    out = capsys.readouterr().out
    assert "❌ check_kl_gaussians: 3 case(s) differ" in out and "prior N(0, 1)" not in out


def test_kl_gaussians_rejects_swapped_arguments(capsys):
    def reverse_kl(mu, logvar, m, log_s2):  # KL(p || q) instead of KL(q || p)
        return 0.5 * (logvar - log_s2 + (log_s2.exp() + (mu - m) ** 2) / logvar.exp() - 1).sum(-1)

    assert not ex.check_kl_gaussians(reverse_kl)
    assert "max |error|" in capsys.readouterr().out


def test_kl_gaussians_accepts_torch_distributions():
    def kl(mu, logvar, m, log_s2):
        q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
        p = torch.distributions.Normal(m, (0.5 * log_s2).exp())
        return torch.distributions.kl_divergence(q, p).sum(-1)

    assert ex.check_kl_gaussians(kl)


# ------------------------------------------------------------------ 07: the VAE loss

def test_vae_loss_rejects_a_per_pixel_mean_and_a_missing_beta(capsys):
    def per_pixel_mean(x, recon, mu, logvar, beta=1.0):  # F.mse_loss averages over pixels too
        kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(-1).mean()
        return F.mse_loss(recon, x) + beta * kl

    assert not ex.check_vae_loss(per_pixel_mean)
    assert "❌ check_vae_loss" in capsys.readouterr().out

    def no_beta(x, recon, mu, logvar, beta=1.0):
        rec = ((recon - x) ** 2).flatten(1).sum(1)
        return (rec + 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(-1)).mean()

    assert not ex.check_vae_loss(no_beta)
    out = capsys.readouterr().out
    assert "3 case(s) differ" in out and "β=1:" not in out  # only the β ≠ 1 cases fail


def test_vae_loss_needs_five_arguments():
    with pytest.raises(TypeError, match="cannot be called as fn"):
        ex.check_vae_loss(lambda x, recon, mu: x)


# ------------------------------------------------------------------ 07: SD's downsampling

def test_sd_downsample_rejects_symmetric_padding(capsys):
    def symmetric(x, weight, bias):  # the UNet's Downsample: same shape for even sides, other numbers
        return F.conv2d(x, weight, bias, stride=2, padding=1)

    assert not ex.check_sd_downsample(symmetric)
    out = capsys.readouterr().out
    assert "max |error|" in out  # even sides: right shape, wrong numbers
    assert "shape (1, 3, 4, 5), expected (1, 3, 3, 4)" in out  # odd sides: the shapes differ too


def test_sd_downsample_rejects_left_top_padding():
    assert not ex.check_sd_downsample(lambda x, w, b: F.conv2d(F.pad(x, (1, 0, 1, 0)), w, b, stride=2))


# ------------------------------------------------------------------ 08: DDPM's time embedding

def test_ddpm_embedding_rejects_the_stable_diffusion_layout(capsys):
    def sd_layout(t, dim):  # cosines first, divide by half: what notebook 08 builds
        half = dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half) / half)
        angles = t.float()[:, None] * freqs
        return torch.cat([angles.cos(), angles.sin()], -1)

    assert not ex.check_ddpm_timestep_embedding(sd_layout)
    assert "❌ check_ddpm_timestep_embedding: 4 case(s) differ" in capsys.readouterr().out

    def sines_first_but_half(t, dim):  # right order, wrong frequencies
        half = dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half) / half)
        angles = t.float()[:, None] * freqs
        return torch.cat([angles.sin(), angles.cos()], -1)

    assert not ex.check_ddpm_timestep_embedding(sines_first_but_half)


# ------------------------------------------------------------------ 08: parameter count of a ResnetBlock

def test_resnet_params_rejects_forgetting_the_skip_and_the_norms(capsys):
    def no_skip(c_in, c_out, temb):
        n = 2 * c_in + 9 * c_in * c_out + c_out + 2 * c_out + 9 * c_out * c_out + c_out
        return n + (0 if temb is None else temb * c_out + c_out)

    assert not ex.check_resnet_params(no_skip)
    out = capsys.readouterr().out
    assert "❌ check_resnet_params: 4 case(s) differ" in out and "off by -" in out

    def always_time(c_in, c_out, temb):  # breaks on the autoencoder's block (temb_dim=None)
        return c_in * temb

    assert not ex.check_resnet_params(always_time)
    assert "raised TypeError" in capsys.readouterr().out


def test_resnet_params_wants_an_int(capsys):
    assert not ex.check_resnet_params(lambda c_in, c_out, temb: float(c_in))
    assert "returned float, expected an int" in capsys.readouterr().out


# ------------------------------------------------------------------ 08: the skip channels

def test_skip_channels_rejects_a_downsample_at_every_level(capsys):
    def one_too_many(chs, n):
        out = [chs[0]]
        for c in chs:
            out += [c] * (n + 1)  # also "downsamples" at the last level
        return out

    assert not ex.check_skip_channels(one_too_many)
    assert "entries, expected 12" in capsys.readouterr().out


def test_skip_channels_rejects_a_missing_conv_in(capsys):
    def no_conv_in(chs, n):
        out = []
        for i, c in enumerate(chs):
            out += [c] * (n + (i < len(chs) - 1))
        return out

    assert not ex.check_skip_channels(no_conv_in)
    assert "❌ check_skip_channels: 4 case(s) differ" in capsys.readouterr().out


def test_skip_channels_are_read_off_the_model():
    """The reference comes from a built model: SD v1.5's up path consumes 12 skips."""
    from course_lib.exercises.nb08_unet import skip_channels_of
    from course_lib.unet import UNetConfig, UNetModel

    with torch.device("meta"):
        skips = skip_channels_of(UNetModel(UNetConfig.sd15()))
    assert len(skips) == 12 and sum(skips) == 320 * 4 + 640 * 3 + 1280 * 5
