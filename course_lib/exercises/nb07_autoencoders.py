"""Notebook 07 (autoencoders): checks for the KL between two Gaussians, the VAE loss and SD's downsampling."""

from __future__ import annotations

import torch

from ..unet_blocks import Downsample
from ..vae_small import vae_loss
from .core import Case, generator, register, require_signature, run_cases

__all__ = ["check_kl_gaussians", "check_vae_loss", "check_sd_downsample"]


def check_kl_gaussians(fn, seed: int = 0) -> bool:
    """Check ``fn(mu, logvar, m, log_s2)`` -> ``[B]``: KL(N(μ, e^logvar) ‖ N(m, e^log_s2)) summed over the last dim.

    Both Gaussians are diagonal; the prior N(m, s²) need not be standard. Reference:
    ``torch.distributions.kl_divergence`` of two ``Normal`` s (Kingma & Welling 2014, appendix B,
    for the standard-normal case). Cases: several shapes, the standard prior, a broad and a narrow prior.
    """
    require_signature(fn, "fn(mu, logvar, m, log_s2)", 4)
    g = generator(seed)
    normal = torch.distributions.Normal
    cases = []
    for label, b, d, prior in [("B=5, d=3, random prior", 5, 3, "random"), ("B=4, d=2, prior N(0, 1)", 4, 2, "standard"),
                               ("B=3, d=6, broad prior N(1, 3²)", 3, 6, "broad"),
                               ("B=2, d=4, narrow prior N(-2, 0.5²)", 2, 4, "narrow")]:
        mu, logvar = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
        if prior == "random":
            m, log_s2 = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
        else:
            mean, std = {"standard": (0.0, 1.0), "broad": (1.0, 3.0), "narrow": (-2.0, 0.5)}[prior]
            m, log_s2 = torch.full((b, d), mean), torch.full((b, d), 2 * torch.log(torch.tensor(std)).item())
        want = torch.distributions.kl_divergence(normal(mu, (0.5 * logvar).exp()), normal(m, (0.5 * log_s2).exp()))
        cases.append(Case(label, (mu, logvar, m, log_s2), want.sum(-1)))
    return run_cases("check_kl_gaussians", fn, cases, atol=1e-5, rtol=1e-5,
                     hint="KL = ½ Σ [log s² − log σ² + (σ² + (μ − m)²) / s² − 1]; with m = 0, s = 1 it is the VAE's KL")


def check_vae_loss(fn, seed: int = 0) -> bool:
    """Check ``fn(x, recon, mu, logvar, beta=1.0)`` -> a scalar: the negative ELBO of notebook 07.

    Per image: the squared error summed over its pixels plus β · KL(N(μ, σ²) ‖ N(0, I)) summed over
    the latent dims; then the mean over the batch. Reference: ``course_lib.vae_small.vae_loss``.
    """
    require_signature(fn, "fn(x, recon, mu, logvar, beta=1.0)", 5)
    g = generator(seed)
    cases = []
    for b, c, s, d, beta in [(4, 1, 16, 2, 1.0), (3, 1, 8, 5, 4.0), (2, 3, 8, 3, 0.1), (5, 1, 4, 2, 0.0)]:
        x, recon = torch.rand(b, c, s, s, generator=g) * 2 - 1, torch.rand(b, c, s, s, generator=g) * 2 - 1
        mu, logvar = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
        want = vae_loss(x, recon, mu, logvar, beta)["loss"]
        cases.append(Case(f"x [{b}, {c}, {s}, {s}], latent {d}, β={beta:g}", (x, recon, mu, logvar, beta), want))
    return run_cases("check_vae_loss", fn, cases, atol=1e-4, rtol=1e-5,
                     hint="sum the squared error over channels and pixels and the KL over latent dims, "
                          "per image; average over the batch only; β multiplies the KL")


def check_sd_downsample(fn, seed: int = 0) -> bool:
    """Check ``fn(x, weight, bias)`` -> SD's encoder downsampling: pad right and bottom by one, 3×3 conv, stride 2.

    ``weight`` [C, C, 3, 3] and ``bias`` [C] are the conv's; reference: ``course_lib.unet_blocks.Downsample(C,
    padding=0)`` (the original latent-diffusion code pads only right and bottom). Cases: even and odd sides.
    """
    require_signature(fn, "fn(x, weight, bias)", 3)
    g = generator(seed)
    cases = []
    for b, c, h, w in [(1, 2, 8, 8), (2, 4, 16, 12), (1, 3, 7, 9)]:
        down = Downsample(c, padding=0)
        with torch.no_grad():
            down.conv.weight.copy_(torch.randn(down.conv.weight.shape, generator=g))
            down.conv.bias.copy_(torch.randn(c, generator=g))
            x = torch.randn(b, c, h, w, generator=g)
            want = down(x)
        cases.append(Case(f"x [{b}, {c}, {h}, {w}]", (x, down.conv.weight.detach().clone(),
                                                     down.conv.bias.detach().clone()), want))
    return run_cases("check_sd_downsample", fn, cases, atol=1e-4, rtol=1e-4,
                     hint="which sides get the extra row and column? (F.pad's tuple names the last dim first); "
                          "the conv itself then pads nothing")


register(check_kl_gaussians, "07", "nb07_autoencoders:my_kl_gaussians")
register(check_vae_loss, "07", "nb07_autoencoders:my_vae_loss")
register(check_sd_downsample, "07", "nb07_autoencoders:my_sd_downsample")
