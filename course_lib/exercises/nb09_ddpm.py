"""Notebook 09 (DDPM): checks for the scaled-linear schedule and the fixed-variance reverse step."""

from __future__ import annotations

import torch

from ..diffusion import alpha_bar, make_betas, predict_x0
from .core import Case, generator, register, require_signature, run_cases

__all__ = ["check_scaled_linear_betas", "check_fixed_variance_step"]


def check_scaled_linear_betas(fn) -> bool:
    """Check ``fn(n, beta_start, beta_end)`` -> β ``[n]``: √β evenly spaced from √beta_start to √beta_end.

    Stable Diffusion's schedule (latent diffusion, Rombach et al. 2022; diffusers'
    ``beta_schedule="scaled_linear"``). Cases: SD's own range and two others.
    """
    require_signature(fn, "fn(n, beta_start, beta_end)", 3)
    cases = [Case(f"n={n}, beta_start={a}, beta_end={b}", (n, a, b), make_betas("scaled_linear", n, a, b))
             for n, a, b in [(1000, 0.00085, 0.012), (50, 1e-4, 0.02), (7, 0.001, 0.3)]]
    return run_cases("check_scaled_linear_betas", fn, cases, atol=1e-7, rtol=1e-4,
                     hint="torch.linspace(beta_start ** 0.5, beta_end ** 0.5, n) ** 2 — linear in √β, not in β")


def _fixed_variance_reference(eps_hat, t, x_t, betas, z):
    """Posterior mean μ̃_t (DDPM eq. 7) plus √β_t z: the "σ_t² = β_t" choice of DDPM §3.2.

    Computed in the inputs' dtype (the check uses float64: near t = 0, 1 - ᾱ_t is tiny
    and float32 formulas that are equal on paper differ by ~1e-3).
    """
    abar = alpha_bar(betas)
    a_t, a_prev = abar[t], (abar[t - 1] if t > 0 else torch.ones((), dtype=betas.dtype))
    x0_hat = predict_x0(x_t, eps_hat, t, abar)  # eq. 15
    mean = a_prev.sqrt() * betas[t] / (1 - a_t) * x0_hat + (1 - betas[t]).sqrt() * (1 - a_prev) / (1 - a_t) * x_t
    return mean + (betas[t].sqrt() * z if t > 0 else 0)


def check_fixed_variance_step(fn, seed: int = 0) -> bool:
    """Check ``fn(eps_hat, t, x_t, betas, z)`` -> x_{t-1} with variance σ_t² = β_t instead of β̃_t.

    DDPM (Ho et al. 2020, §3.2) reports that σ_t² = β_t and σ_t² = β̃_t give similar
    samples: the mean is the same posterior mean μ̃_t (eq. 7), only the noise added
    differs, and β̃_t = (1-ᾱ_{t-1})/(1-ᾱ_t) β_t is close to β_t except for small t. No
    noise is added at t = 0. Returning ``(x_prev, x0_hat)`` is fine too. Cases (float64):
    t = 0, 1, 2, 10 (where the two variances differ most) and larger t, on the cosine and
    the linear schedule.
    """
    require_signature(fn, "fn(eps_hat, t, x_t, betas, z)", 5)
    g = generator(seed)
    cases = []
    for kind, t, shape in [("cosine", 500, (2, 1, 8, 8)), ("cosine", 1, (2, 1, 8, 8)), ("linear", 0, (1, 1, 8, 8)),
                           ("linear", 2, (2, 3, 4, 4)), ("linear", 10, (3, 1, 8, 8)), ("linear", 999, (2, 1, 8, 8))]:
        betas = make_betas(kind, 1000).double()
        eps_hat, x_t, z = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))
        cases.append(Case(f"{kind} schedule, t={t}, shape {shape}", (eps_hat, t, x_t, betas, z),
                          (_fixed_variance_reference(eps_hat, t, x_t, betas, z),)))
    return run_cases("check_fixed_variance_step", fn, cases, atol=1e-6, rtol=1e-6, min_outputs=1,
                     hint="the same posterior mean as my_ddpm_step; only the noise's scale changes: "
                          "√β_t instead of √β̃_t (and none at t = 0)")


register(check_scaled_linear_betas, "09", "nb09_ddpm:my_scaled_linear_betas")
register(check_fixed_variance_step, "09", "nb09_ddpm:my_fixed_variance_step")
