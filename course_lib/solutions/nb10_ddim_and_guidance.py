"""Solutions to notebook 10's exercises (DDIM, guidance, interpolation)."""

import torch


def my_guided_eps(model, x, t, labels, w, null_label=10):
    """ε_∅ + w (ε_y - ε_∅), both halves in one batched forward of 2B inputs."""
    null = torch.full_like(labels, null_label)
    eps = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([null, labels]))  # [2B, C, H, W]
    eps_uncond, eps_cond = eps.chunk(2)
    return eps_uncond + w * (eps_cond - eps_uncond)


def my_slerp(a, b, alpha):
    """Spherical interpolation per batch item: the great circle from a to b (Shoemake 1985)."""
    fa, fb = a.flatten(1), b.flatten(1)  # [B, D]
    cos = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1))
    theta = torch.arccos(cos.clamp(-1, 1))[:, None]  # [B, 1]
    out = (torch.sin((1 - alpha) * theta) * fa + torch.sin(alpha * theta) * fb) / torch.sin(theta)
    return out.reshape(a.shape)


def my_ddim_inversion_step(eps, t_from, t_to, x, alphas_cumprod):
    """x̂₀ from x at t_from, then forward to t_to along the same ε (DDIM eq. 12, η = 0, backwards)."""
    a_from, a_to = alphas_cumprod[t_from], alphas_cumprod[t_to]
    x0_hat = (x - (1 - a_from).sqrt() * eps) / a_from.sqrt()
    return a_to.sqrt() * x0_hat + (1 - a_to).sqrt() * eps
