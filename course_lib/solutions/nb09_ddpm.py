"""Solutions to notebook 09's exercises (DDPM)."""

import torch


def my_scaled_linear_betas(n, beta_start, beta_end):
    """Stable Diffusion's schedule: √β evenly spaced, then squared. ``[n]``"""
    return torch.linspace(beta_start**0.5, beta_end**0.5, n) ** 2


def my_fixed_variance_step(eps_hat, t, x_t, betas, z):
    """x_{t-1} = μ̃_t(x_t, x̂0) + √β_t z (DDPM §3.2, σ_t² = β_t); no noise at t = 0."""
    abar = torch.cumprod(1 - betas, dim=0)
    a_t, a_prev = abar[t], (abar[t - 1] if t > 0 else torch.tensor(1.0))
    x0_hat = (x_t - (1 - a_t).sqrt() * eps_hat) / a_t.sqrt()  # eq. 15
    mean = a_prev.sqrt() * betas[t] / (1 - a_t) * x0_hat + (1 - betas[t]).sqrt() * (1 - a_prev) / (1 - a_t) * x_t
    return mean + (betas[t].sqrt() * z if t > 0 else 0), x0_hat
