"""Noise schedules for diffusion models: β_t, ᾱ_t and the signal-to-noise ratio.

The forward process adds a little Gaussian noise at each of N steps,
``q(x_t | x_{t-1}) = N(sqrt(1 - β_t) x_{t-1}, β_t I)`` (Ho et al. 2020, "Denoising
Diffusion Probabilistic Models", eq. 2). The schedule is the list β_0 … β_{N-1}
(timesteps are 0-based, as in diffusers). Everything else follows from it:

    α_t = 1 - β_t,    ᾱ_t = ∏_{s ≤ t} α_s,    SNR(t) = ᾱ_t / (1 - ᾱ_t).

Three schedules, each equal to diffusers' ``betas`` for the same settings:

* ``linear``: β from 1e-4 to 0.02 (DDPM);
* ``scaled_linear``: √β linear from √0.00085 to √0.012, then squared (Stable Diffusion v1);
* ``cosine``: the squared-cosine schedule of Nichol & Dhariwal 2021 ("Improved
  DDPM", eq. 17), ᾱ(τ) = cos²((τ + s)/(1 + s) · π/2) with s = 0.008, each β capped
  at 0.999 (diffusers' ``squaredcos_cap_v2``).
"""

from __future__ import annotations

import math

import torch

__all__ = ["SCHEDULES", "make_betas", "alpha_bar", "snr", "log_snr"]

# kind -> default (beta_start, beta_end); the cosine schedule has none
SCHEDULES = {"linear": (1e-4, 0.02), "scaled_linear": (0.00085, 0.012), "cosine": None}


def make_betas(kind: str, n: int = 1000, beta_start: float | None = None, beta_end: float | None = None,
               max_beta: float = 0.999) -> torch.Tensor:
    """β_0 … β_{n-1} as a float32 tensor ``[n]``.

    ``beta_start``/``beta_end`` default to the published values of each kind
    (linear: 1e-4, 0.02; scaled_linear: 0.00085, 0.012). The cosine schedule is
    defined by ᾱ, not by a β range, so passing them with ``kind="cosine"`` is an error.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule kind {kind!r}; allowed: {', '.join(SCHEDULES)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (the number of training timesteps) must be an int >= 1, got {n!r}")
    if kind == "cosine":
        if beta_start is not None or beta_end is not None:
            raise ValueError("the cosine schedule is defined by its ᾱ curve and takes no beta_start/beta_end; "
                             "leave them unset (use max_beta to change the cap)")
        if not 0 < max_beta < 1:
            raise ValueError(f"max_beta must be in (0, 1), got {max_beta}")
        return _cosine_betas(n, max_beta)
    start, end = SCHEDULES[kind]
    start = start if beta_start is None else float(beta_start)
    end = end if beta_end is None else float(beta_end)
    if not 0 < start <= end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got beta_start={start}, beta_end={end}")
    if kind == "linear":
        return torch.linspace(start, end, n, dtype=torch.float32)
    # scaled_linear: linear in sqrt(β), as in Stable Diffusion / latent diffusion
    return torch.linspace(start**0.5, end**0.5, n, dtype=torch.float32) ** 2


def _cosine_betas(n: int, max_beta: float, s: float = 0.008) -> torch.Tensor:
    """β_t = min(1 - ᾱ((t+1)/n) / ᾱ(t/n), max_beta) (Nichol & Dhariwal 2021, eq. 17 and after)."""
    tau = torch.arange(n + 1, dtype=torch.float64) / n  # [n+1] in [0, 1]
    abar = torch.cos((tau + s) / (1 + s) * math.pi / 2) ** 2  # continuous ᾱ(τ)
    betas = (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)
    return betas.to(torch.float32)


def _check_betas(betas: torch.Tensor) -> torch.Tensor:
    if not isinstance(betas, torch.Tensor):
        raise TypeError(f"betas must be a torch.Tensor, got {type(betas).__name__}")
    if betas.ndim != 1 or betas.numel() < 1 or not betas.is_floating_point():
        raise ValueError(f"betas must be a 1-D float tensor with at least one entry, got shape "
                         f"{tuple(betas.shape)} and dtype {betas.dtype}")
    if not bool(((betas > 0) & (betas < 1)).all()):
        raise ValueError("every beta must lie in (0, 1)")
    return betas


def alpha_bar(betas: torch.Tensor) -> torch.Tensor:
    """ᾱ_t = ∏_{s≤t} (1 - β_s), the fraction of signal variance left at step t. ``[N]``"""
    return torch.cumprod(1.0 - _check_betas(betas), dim=0)


def snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ᾱ_t / (1 - ᾱ_t) of x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε. ``[N]``"""
    return alphas_cumprod / (1 - alphas_cumprod)


def log_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """log SNR(t) = log ᾱ_t - log(1 - ᾱ_t): a schedule's shape on one readable axis. ``[N]``"""
    return torch.log(alphas_cumprod) - torch.log1p(-alphas_cumprod)
