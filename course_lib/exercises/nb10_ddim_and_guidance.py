"""Notebook 10 (DDIM and guidance): checks for classifier-free guidance, slerp and one DDIM inversion step."""

from __future__ import annotations

import torch

from ..diffusion import DDIMSampler, guided_eps, make_betas, slerp
from .core import Case, generator, register, require_signature, run_cases

__all__ = ["check_guided_eps", "check_slerp", "check_ddim_inversion_step"]


def _toy_denoiser(x, t, labels):
    """A stand-in for ε_θ(x, t, y): deterministic, and different for every label (10 = ∅)."""
    y = labels.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))  # [B, 1, 1, 1]
    tt = t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1))) / 1000
    return torch.tanh(x * (1 + 0.1 * y) + tt) + 0.05 * y * torch.cos(x)


def check_guided_eps(fn, seed: int = 0) -> bool:
    """Check ``fn(model, x, t, labels, w, null_label=10)`` -> the guided ε̃ ``[B, C, H, W]``.

    ``model(x, t, labels) -> ε`` (x ``[B, C, H, W]``, t and labels LongTensors ``[B]``);
    ε̃ = ε(x, t, ∅) + w (ε(x, t, y) - ε(x, t, ∅)) with ∅ = ``null_label`` (Ho & Salimans 2022,
    eq. 6, with the course's w = 1 + the paper's w). Cases: w = 0, 1, 3 and 7.5 on a toy
    denoiser; one batched call of the model with 2B inputs or two calls are both fine.
    """
    require_signature(fn, "fn(model, x, t, labels, w, null_label=10)", 5, ["null_label"])
    g = generator(seed)
    cases = []
    for w, b, null in [(0.0, 2, 10), (1.0, 3, 10), (3.0, 4, 10), (7.5, 2, 0)]:
        x = torch.randn(b, 1, 8, 8, generator=g)
        t = torch.randint(0, 1000, (b,), generator=g)
        labels = torch.randint(1, 10, (b,), generator=g)
        eps_u = _toy_denoiser(x, t, torch.full_like(labels, null))
        expected = guided_eps(eps_u, _toy_denoiser(x, t, labels), w)
        cases.append(Case(f"w={w}, B={b}, null_label={null}", (_toy_denoiser, x, t, labels, w), expected,
                          {"null_label": null}))
    return run_cases("check_guided_eps", fn, cases, atol=1e-5, rtol=1e-5,
                     hint="ε_u = model(x, t, a tensor full of null_label), ε_c = model(x, t, labels); "
                          "return ε_u + w * (ε_c - ε_u)")


def check_slerp(fn, seed: int = 0) -> bool:
    """Check ``fn(a, b, alpha)`` -> spherical interpolation per batch item (``course_lib.diffusion.slerp``).

    slerp(a, b; α) = sin((1-α)θ)/sin θ · a + sin(αθ)/sin θ · b, θ the angle between the
    flattened a and b of each batch item (Shoemake 1985). Cases: α = 0, 0.25, 0.5, 1 and
    a batch whose items lie at different angles.
    """
    require_signature(fn, "fn(a, b, alpha)", 3)
    g = generator(seed)
    cases = []
    for shape, alpha in [((1, 1, 8, 8), 0.0), ((1, 1, 8, 8), 0.25), ((3, 1, 8, 8), 0.5), ((2, 4, 4, 4), 1.0),
                         ((4, 1, 8, 8), 0.7)]:
        a, b = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        b[0] = 0.5 * b[0] + 0.8 * a[0]  # item 0 at a small angle to a, the others near 90°
        cases.append(Case(f"shape {shape}, alpha={alpha}", (a, b, alpha), slerp(a, b, alpha)))
    return run_cases("check_slerp", fn, cases, atol=1e-5, rtol=1e-4,
                     hint="flatten each item to [B, D]; θ = arccos(a·b / (|a| |b|)) per item; "
                          "weights sin((1-α)θ)/sin θ and sin(αθ)/sin θ, then reshape back")


def check_ddim_inversion_step(fn, seed: int = 0) -> bool:
    """Check ``fn(eps, t_from, t_to, x, alphas_cumprod)`` -> x at the later timestep ``t_to``.

    One step of DDIM inversion (Song et al. 2021 eq. 12 run backwards, η = 0):
    x̂₀ = (x - √(1-ᾱ_from) ε) / √ᾱ_from, then x_to = √ᾱ_to x̂₀ + √(1-ᾱ_to) ε. The cases are
    steps that ``DDIMSampler.invert`` takes on a toy ε-model (20 steps, cosine schedule).
    """
    require_signature(fn, "fn(eps, t_from, t_to, x, alphas_cumprod)", 5)
    g = generator(seed)
    sampler = DDIMSampler(make_betas("cosine", 1000), n_steps=20)
    steps = []
    sampler.invert(lambda x, t: torch.tanh(x) * 0.8 + 0.1 * t[:, None, None, None] / 1000,
                   torch.randn(3, 1, 8, 8, generator=g).clamp(-1, 1), callback=steps.append)
    cases = [Case(f"step {s.i}: t {s.t} -> {s.t_prev}", (s.eps, s.t, s.t_prev, s.x_t, sampler.alphas_cumprod),
                  s.x_prev) for s in steps if s.i in (1, 2, 10, 19)]  # step 0 starts from the clean image
    return run_cases("check_ddim_inversion_step", fn, cases, atol=1e-5, rtol=1e-5,
                     hint="first x̂₀ with ᾱ at t_from, then re-noise it to t_to with the same ε")


register(check_guided_eps, "10", "nb10_ddim_and_guidance:my_guided_eps")
register(check_slerp, "10", "nb10_ddim_and_guidance:my_slerp")
register(check_ddim_inversion_step, "10", "nb10_ddim_and_guidance:my_ddim_inversion_step")
