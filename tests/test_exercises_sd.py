"""Notebooks 11-12's exercise checks: the mistakes a learner is likely to make are caught, with a reason."""

import torch
import torch.nn.functional as F

from course_lib import exercises as ex
from course_lib.solutions import nb11_stable_diffusion as s11
from course_lib.solutions import nb12_inpainting as s12


def test_quick_gelu_is_not_the_exact_gelu(capsys):
    assert ex.check_quick_gelu(s11.my_quick_gelu)
    assert not ex.check_quick_gelu(F.gelu)
    assert "exact GELU" in capsys.readouterr().out
    assert not ex.check_quick_gelu(lambda x: x * torch.sigmoid(x))  # SiLU: the constant 1.702 matters


def test_guidance_catches_swapped_halves_and_wrong_formula(capsys):
    def swapped(unet, z, t, cond, uncond, w):  # the prompt's states in the first half
        eps_c, eps_u = unet(torch.cat([z, z]), torch.full((2 * len(z),), t), torch.cat([uncond, cond])).chunk(2)
        return eps_u + w * (eps_c - eps_u)

    def paper_w(unet, z, t, cond, uncond, w):  # Ho & Salimans' own w: (1 + w) ε_c − w ε_u
        eps_u, eps_c = (unet(z, torch.full((len(z),), t), c) for c in (uncond, cond))
        return (1 + w) * eps_c - w * eps_u

    def two_calls(unet, z, t, cond, uncond, w):  # two UNet calls instead of one: the same numbers
        eps_u, eps_c = (unet(z, torch.full((len(z),), t), c) for c in (uncond, cond))
        return eps_u + w * (eps_c - eps_u)

    assert ex.check_sd_guidance(s11.my_guided_eps)
    assert ex.check_sd_guidance(two_calls)
    capsys.readouterr()
    assert not ex.check_sd_guidance(swapped)
    assert not ex.check_sd_guidance(paper_w)
    assert "B=1, w=0" in capsys.readouterr().out


def test_ddim_step_rejects_clipping_the_latent_prediction(capsys):
    def clipped(eps, z, a_t, a_prev):
        z0 = ((z - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5).clamp(-1, 1)
        return a_prev ** 0.5 * z0 + (1 - a_prev) ** 0.5 * eps, z0

    assert ex.check_ddim_latent_step(s11.my_ddim_step)
    capsys.readouterr()
    assert not ex.check_ddim_latent_step(clipped)
    assert "max |error|" in capsys.readouterr().out
    assert not ex.check_ddim_latent_step(lambda eps, z, a, b: z)  # one output instead of two
    assert "returned 1 value(s), expected 2" in capsys.readouterr().out


def test_inpainting_checks_catch_common_mistakes(capsys):
    assert ex.check_inpaint_blend(s12.my_blend)
    assert not ex.check_inpaint_blend(lambda zm, zk, m, n, a: (1 - m) * zm + m * (a ** 0.5 * zk + (1 - a) ** 0.5 * n))
    assert not ex.check_inpaint_blend(lambda zm, zk, m, n, a: m * zm + (1 - m) * zk)  # known region not noised
    assert ex.check_erase(s12.my_erase)
    assert not ex.check_erase(lambda x, m: x * (1 - m))  # zeros, not the mean colour
    assert not ex.check_erase(lambda x, m: x * (1 - m) + x.mean((2, 3), keepdim=True) * m)  # mean over all pixels
    assert ex.check_latent_mask(s12.my_latent_mask)
    assert not ex.check_latent_mask(lambda m, f, threshold=0.5: F.max_pool2d(m, f))  # "any pixel", whatever the threshold
    assert not ex.check_latent_mask(lambda m, f, threshold=0.5: (F.avg_pool2d(m, f) > threshold).float())  # > not >=
    capsys.readouterr()
    assert ex.check_repaint_schedule(s12.my_repaint_schedule)
    assert not ex.check_repaint_schedule(lambda n, j, r: list(range(n + 1)))  # no jumps at all
    assert "first difference at move" in capsys.readouterr().out
