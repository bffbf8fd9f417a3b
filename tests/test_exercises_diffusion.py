"""The exercise checks of notebooks 09 and 10 catch the mistakes a learner is likely to make."""

import pytest
import torch

from course_lib import exercises as ex
from course_lib.diffusion import DDPMSampler, make_betas
from course_lib.solutions import nb09_ddpm as sol09
from course_lib.solutions import nb10_ddim_and_guidance as sol10


def test_scaled_linear_betas_must_be_linear_in_sqrt_beta(capsys):
    assert ex.check_scaled_linear_betas(sol09.my_scaled_linear_betas)
    capsys.readouterr()
    assert not ex.check_scaled_linear_betas(lambda n, a, b: torch.linspace(a, b, n))  # linear in β
    assert "❌ check_scaled_linear_betas: 3 case(s) differ" in capsys.readouterr().out
    assert not ex.check_scaled_linear_betas(lambda n, a, b: torch.linspace(a**0.5, b**0.5, n + 1)[1:] ** 2)
    assert "shape (1001,)" not in capsys.readouterr().out  # right shape, wrong values


def test_fixed_variance_step_is_not_the_posterior_variance(capsys):
    assert ex.check_fixed_variance_step(sol09.my_fixed_variance_step)
    assert ex.check_fixed_variance_step(lambda *a: sol09.my_fixed_variance_step(*a)[0])  # x_prev alone is fine
    capsys.readouterr()

    def posterior_variance(eps_hat, t, x_t, betas, z):  # β̃_t: the step of section 3 (DDPMSampler's)
        x_prev, _ = sol09.my_fixed_variance_step(eps_hat, t, x_t, betas, torch.zeros_like(z))
        abar = torch.cumprod(1 - betas, 0)
        var = (1 - abar[t - 1]) / (1 - abar[t]) * betas[t] if t > 0 else 0 * betas[t]
        return x_prev + var.sqrt() * z

    assert not ex.check_fixed_variance_step(posterior_variance)
    out = capsys.readouterr().out
    assert "cosine schedule, t=1," in out and "linear schedule, t=2," in out  # β̃ and β differ at small t
    assert "linear schedule, t=0," not in out  # ... and agree at t = 0: no noise either way

    def noise_at_zero(eps_hat, t, x_t, betas, z):
        x_prev, _ = sol09.my_fixed_variance_step(eps_hat, t, x_t, betas, z)
        return x_prev + (betas[0].sqrt() * z if t == 0 else 0)

    assert not ex.check_fixed_variance_step(noise_at_zero)
    assert "linear schedule, t=0" in capsys.readouterr().out


def test_fixed_variance_solution_has_the_samplers_mean():
    """The reference's mean (z = 0) is DDPMSampler's posterior mean: the check and the library agree."""
    g = torch.Generator().manual_seed(0)
    betas = make_betas("cosine", 1000)
    eps, x = torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)
    for t in (999, 500, 100):
        mine, x0 = sol09.my_fixed_variance_step(eps, t, x, betas, torch.zeros_like(x))
        ours = DDPMSampler(betas).step(eps, t, x, noise=torch.zeros_like(x))
        torch.testing.assert_close(mine, ours.x_prev, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(x0, ours.x0_pred, atol=1e-5, rtol=1e-5)


def test_guided_eps_uses_the_course_convention(capsys):
    assert ex.check_guided_eps(sol10.my_guided_eps)

    def two_calls(model, x, t, labels, w, null_label=10):
        e_u, e_c = model(x, t, torch.full_like(labels, null_label)), model(x, t, labels)
        return e_u + w * (e_c - e_u)

    assert ex.check_guided_eps(two_calls)
    capsys.readouterr()

    def paper_convention(model, x, t, labels, w, null_label=10):  # Ho & Salimans: (1 + w) ε_c - w ε_u
        e_u, e_c = model(x, t, torch.full_like(labels, null_label)), model(x, t, labels)
        return (1 + w) * e_c - w * e_u

    assert not ex.check_guided_eps(paper_convention)
    assert "w=0.0" in capsys.readouterr().out

    def ignores_null_label(model, x, t, labels, w, null_label=10):
        return two_calls(model, x, t, labels, w, 10)

    assert not ex.check_guided_eps(ignores_null_label)
    assert "null_label=0" in capsys.readouterr().out


def test_slerp_is_not_lerp(capsys):
    assert ex.check_slerp(sol10.my_slerp)
    capsys.readouterr()
    assert not ex.check_slerp(lambda a, b, alpha: (1 - alpha) * a + alpha * b)
    out = capsys.readouterr().out
    assert "alpha=0.5" in out and "alpha=0.0," not in out  # the ends agree, the middle does not

    def one_angle_for_the_batch(a, b, alpha):
        return sol10.my_slerp(a.reshape(1, -1), b.reshape(1, -1), alpha).reshape(a.shape)

    assert not ex.check_slerp(one_angle_for_the_batch)
    assert "shape (3, 1, 8, 8), alpha=0.5" in capsys.readouterr().out


def test_ddim_inversion_step_takes_x0_at_the_start(capsys):
    assert ex.check_ddim_inversion_step(sol10.my_ddim_inversion_step)
    capsys.readouterr()

    def x0_at_the_end(eps, t_from, t_to, x, abar):
        return sol10.my_ddim_inversion_step(eps, t_to, t_to, x, abar)

    assert not ex.check_ddim_inversion_step(x0_at_the_end)
    assert "❌ check_ddim_inversion_step: 4 case(s) differ" in capsys.readouterr().out


@pytest.mark.parametrize("check", [ex.check_scaled_linear_betas, ex.check_fixed_variance_step, ex.check_guided_eps,
                                   ex.check_slerp, ex.check_ddim_inversion_step])
def test_a_function_with_too_few_arguments_is_a_type_error(check):
    with pytest.raises(TypeError, match="cannot be called as fn"):
        check(lambda a: a)
