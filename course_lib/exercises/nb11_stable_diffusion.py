"""Notebook 11 (Stable Diffusion): checks for quick-GELU, guidance with one batched UNet call, a DDIM step."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..clip import quick_gelu
from ..diffusion import ClassifierFreeGuidance, DDIMSampler, make_betas
from .core import Case, describe_difference, generator, register, require_signature, run_cases

__all__ = ["check_quick_gelu", "check_sd_guidance", "check_ddim_latent_step", "toy_unet"]


def check_quick_gelu(fn, seed: int = 0) -> bool:
    """Check ``fn(x)`` -> x · σ(1.702 x), the GELU approximation CLIP was trained with.

    (Hendrycks & Gimpel 2016, sec. 2: GELU(x) ≈ x σ(1.702 x); OpenAI's CLIP uses it.)
    """
    require_signature(fn, "fn(x)", 1)
    g = generator(seed)
    xs = [torch.linspace(-6, 6, 101), torch.randn(3, 7, generator=g) * 2]
    cases = [Case(f"x of shape {list(x.shape)}", (x,), quick_gelu(x)) for x in xs]
    ok = run_cases("check_quick_gelu", fn, cases, atol=1e-5, rtol=1e-5,
                   hint="x * torch.sigmoid(1.702 * x): the sigmoid, not Φ (that is the exact GELU)")
    if not ok:
        try:
            if all(describe_difference(fn(x), F.gelu(x), 1e-5, 1e-5) is None for x in xs):
                print("   note: your function is the exact GELU x·Φ(x); quick_gelu replaces Φ by σ(1.702 x)")
        except Exception:
            pass
    return ok


def toy_unet(x: torch.Tensor, t, cond: torch.Tensor) -> torch.Tensor:
    """A stand-in for the UNet, cheap and exact: ε(x, t, cond) [B, C, h, w] from x [B, C, h, w],
    t (an int or [B]) and cond [B, L, D] with D ≥ C. Each sample depends on its own x, t and cond,
    so pairing a latent with another sample's prompt is caught."""
    b, c = x.shape[:2]
    t = torch.as_tensor(t, dtype=torch.float32).reshape(-1).expand(b)  # [B]
    scale = cond.mean(1)[:, :c, None, None]  # [B, C, 1, 1]
    shift = torch.sin(t / 100)[:, None, None, None] * cond[:, 0, :c, None, None]  # [B, C, 1, 1]
    return torch.tanh(x * scale + shift)


def check_sd_guidance(fn, seed: int = 0) -> bool:
    """Check ``fn(unet, z, t, cond, uncond, w)`` -> guided ε̃ ``[B, C, h, w]``.

    One UNet call on the doubled batch (z twice, the empty prompt's states then the
    prompt's), split in two, combined as ε_u + w (ε_c − ε_u) (classifier-free guidance,
    Ho & Salimans 2022, eq. 6 with their w + 1 written as w). ``t`` is an int; ``unet``
    takes ``(x, t [2B], cond [2B, L, D])``. Compared with ``ClassifierFreeGuidance``.
    """
    require_signature(fn, "fn(unet, z, t, cond, uncond, w)", 6)
    g = generator(seed)
    cases = []
    for b, w, t in [(1, 0.0, 901), (2, 1.0, 501), (2, 5.0, 301), (3, 7.5, 1)]:
        z = torch.randn(b, 4, 8, 8, generator=g)
        cond, uncond = torch.randn(b, 6, 8, generator=g), torch.randn(b, 6, 8, generator=g)
        expected = ClassifierFreeGuidance(toy_unet, cond, uncond, w)(z, torch.full((b,), t))
        cases.append(Case(f"B={b}, w={w:g}, t={t}", (toy_unet, z, t, cond, uncond, w), expected))
    return run_cases("check_sd_guidance", fn, cases, atol=1e-5, rtol=1e-5,
                     hint="eps_u, eps_c = unet(cat([z, z]), full((2B,), t), cat([uncond, cond])).chunk(2); "
                          "then eps_u + w * (eps_c - eps_u)")


def check_ddim_latent_step(fn, seed: int = 0) -> bool:
    """Check ``fn(eps, z, alpha_bar_t, alpha_bar_prev)`` -> ``(z_prev, z0_hat)``: one DDIM step, η = 0.

    ẑ₀ = (z − √(1−ᾱ_t) ε) / √ᾱ_t, *not clipped* (latents are not confined to [-1, 1]);
    z_prev = √ᾱ_prev ẑ₀ + √(1−ᾱ_prev) ε (Song et al. 2021, eq. 12 with σ = 0). Compared
    with ``DDIMSampler.step`` on SD v1.5's schedule, the last step (ᾱ_prev = ᾱ_0) included.
    """
    require_signature(fn, "fn(eps, z, alpha_bar_t, alpha_bar_prev)", 4)
    g = generator(seed)
    sampler = DDIMSampler(make_betas("scaled_linear", 1000), n_steps=10)  # SD v1.5's schedule and spacing
    cases = []
    for t in [int(sampler.timesteps[i]) for i in (0, 4, 9)]:
        z = torch.randn(2, 4, 8, 8, generator=g) * 3  # latents reach well beyond ±1
        eps = torch.randn(2, 4, 8, 8, generator=g)
        a_t = float(sampler.alphas_cumprod[t])
        a_prev = float(sampler.alpha_bar_at(sampler.prev_timestep(t)))
        cases.append(Case(f"t={t} -> {sampler.prev_timestep(t)}", (eps, z, a_t, a_prev), tuple(sampler.step(eps, t, z))))
    return run_cases("check_ddim_latent_step", fn, cases, atol=1e-4, rtol=1e-4,
                     hint="z0 = (z - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5 with no clamp; "
                          "z_prev = a_prev ** 0.5 * z0 + (1 - a_prev) ** 0.5 * eps; return (z_prev, z0)")


register(check_quick_gelu, "11", "nb11_stable_diffusion:my_quick_gelu")
register(check_sd_guidance, "11", "nb11_stable_diffusion:my_guided_eps")
register(check_ddim_latent_step, "11", "nb11_stable_diffusion:my_ddim_step")
