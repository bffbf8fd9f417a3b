"""Notebook 12 (inpainting): checks for blending, erasing, the latent mask and RePaint's schedule."""

from __future__ import annotations

import torch

from ..diffusion import q_sample
from ..pipelines import downsample_mask, erase, repaint_schedule
from .core import Case, generator, register, require_signature, run_cases

__all__ = ["check_inpaint_blend", "check_erase", "check_latent_mask", "check_repaint_schedule"]


def check_inpaint_blend(fn, seed: int = 0) -> bool:
    """Check ``fn(z_model, z_known, m, noise, alpha_bar_prev)`` -> the blended latents.

    m ⊙ z_model + (1 − m) ⊙ (√ᾱ z_known + √(1 − ᾱ) noise): the known latents noised to the
    landing timestep (q(z_t | z_0), Ho et al. 2020, eq. 4) pasted outside the mask (1 = generate),
    as in Blended Latent Diffusion (Avrahami et al. 2023). ᾱ = 1 is the end: pasted as they are.
    """
    require_signature(fn, "fn(z_model, z_known, m, noise, alpha_bar_prev)", 5)
    g = generator(seed)
    cases = []
    for a in (0.9, 0.3, 1.0):
        z_model, z_known, noise = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
        m = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()  # [B, 1, h, w], broadcast over channels
        known = q_sample(z_known, 0, noise, torch.tensor([a]))
        cases.append(Case(f"alpha_bar_prev={a}", (z_model, z_known, m, noise, a), m * z_model + (1 - m) * known))
    return run_cases("check_inpaint_blend", fn, cases, atol=1e-5, rtol=1e-5,
                     hint="m keeps the model's latents (1 = generate); outside it, "
                          "a ** 0.5 * z_known + (1 - a) ** 0.5 * noise")


def check_erase(fn, seed: int = 0) -> bool:
    """Check ``fn(image, pixel_mask)``: masked pixels [B, 1, H, W] = 1 filled with each image's mean kept colour."""
    require_signature(fn, "fn(image, pixel_mask)", 2)
    g = generator(seed)
    cases = []
    for b, size in [(1, 8), (3, 16)]:
        image = torch.rand(b, 3, size, size, generator=g) * 2 - 1
        mask = (torch.rand(b, 1, size, size, generator=g) > 0.6).float()  # a different mask per image
        cases.append(Case(f"B={b}, {size}x{size}", (image, mask), erase(image, mask)))
    return run_cases("check_erase", fn, cases, atol=1e-5, rtol=1e-5,
                     hint="per image and channel: mean over the kept pixels (mask 0), then "
                          "image * (1 - mask) + mean * mask")


def check_latent_mask(fn, seed: int = 0) -> bool:
    """Check ``fn(pixel_mask, factor, threshold=0.5)`` -> latent mask ``[B, 1, H/f, W/f]`` of 0.0/1.0.

    A cell of f×f pixels is regenerated when at least ``threshold`` of its pixels are masked.
    """
    require_signature(fn, "fn(pixel_mask, factor, threshold=0.5)", 2, ["threshold"])
    g = generator(seed)
    cases = []
    for factor, threshold in [(4, 0.5), (8, 0.5), (4, 1e-6), (2, 1.0)]:
        mask = torch.zeros(2, 1, 32, 32)
        for i in range(2):  # a rectangle with edges that cut through latent cells
            y0, x0 = torch.randint(0, 14, (2,), generator=g).tolist()
            h, w = torch.randint(5, 17, (2,), generator=g).tolist()
            mask[i, :, y0:y0 + h, x0:x0 + w] = 1
        cases.append(Case(f"factor={factor}, threshold={threshold:g}", (mask, factor),
                          downsample_mask(mask, factor, threshold), {"threshold": threshold}))
    return run_cases("check_latent_mask", fn, cases, atol=0, rtol=0,
                     hint="the fraction of masked pixels per cell is F.avg_pool2d(mask, factor); "
                          "compare it with the threshold (>=) and return floats")


def _same_path(got, expected) -> str | None:
    """None when ``got`` is the same list of step indices; otherwise where it first differs."""
    if isinstance(got, torch.Tensor):
        got = got.tolist()
    if not isinstance(got, (list, tuple)):
        return f"returned {type(got).__name__}, expected a list of step indices"
    got = [int(i) for i in got]
    if got == expected:
        return None
    first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
    return (f"{len(got)} indices, expected {len(expected)}; first difference at move {first}: "
            f"got {got[first:first + 4]}, expected {expected[first:first + 4]}")


def check_repaint_schedule(fn) -> bool:
    """Check ``fn(n_steps, jump_length, jump_n_sample)`` -> RePaint's path through the step indices 0 … n.

    Down one index at a time; at every multiple of ``jump_length`` (below n) jump back up
    ``jump_length`` indices, ``jump_n_sample − 1`` times at each place (Lugmayr et al. 2022, sec. 4.2).
    """
    require_signature(fn, "fn(n_steps, jump_length, jump_n_sample)", 3)
    cases = [Case(f"n={n}, jump_length={j}, jump_n_sample={r}", (n, j, r), repaint_schedule(n, j, r))
             for n, j, r in [(4, 2, 1), (4, 2, 2), (6, 2, 3), (10, 5, 2), (12, 5, 3), (30, 5, 3)]]
    return run_cases("check_repaint_schedule", fn, cases, compare=_same_path,
                     hint="keep a counter of jumps left per place; after stepping down to i, "
                          "if i is a multiple of jump_length below n and jumps are left, go back up")


register(check_inpaint_blend, "12", "nb12_inpainting:my_blend")
register(check_erase, "12", "nb12_inpainting:my_erase")
register(check_latent_mask, "12", "nb12_inpainting:my_latent_mask")
register(check_repaint_schedule, "12", "nb12_inpainting:my_repaint_schedule")
