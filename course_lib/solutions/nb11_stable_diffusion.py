"""Solutions to notebook 11's exercises (Stable Diffusion)."""

import torch


def my_quick_gelu(x):
    """CLIP's activation: x · σ(1.702 x), a cheap stand-in for x · Φ(x)."""
    return x * torch.sigmoid(1.702 * x)


def my_guided_eps(unet, z, t, cond, uncond, w):
    """Both halves in one UNet call (batch 2B), then ε_u + w (ε_c − ε_u)."""
    b = z.shape[0]
    eps_u, eps_c = unet(torch.cat([z, z]), torch.full((2 * b,), t), torch.cat([uncond, cond])).chunk(2)
    return eps_u + w * (eps_c - eps_u)


def my_ddim_step(eps, z, alpha_bar_t, alpha_bar_prev):
    """DDIM with η = 0: jump to ẑ₀ (no clipping in latent space), then back out along ε to ᾱ_prev."""
    z0 = (z - (1 - alpha_bar_t) ** 0.5 * eps) / alpha_bar_t ** 0.5
    z_prev = alpha_bar_prev ** 0.5 * z0 + (1 - alpha_bar_prev) ** 0.5 * eps
    return z_prev, z0
