"""course_lib.diffusion against diffusers' schedulers, plus inversion, guidance and errors."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from course_lib.diffusion import (
    ClassifierFreeGuidance,
    DDIMSampler,
    DDPMSampler,
    alpha_bar,
    diffusion_loss,
    guided_eps,
    log_snr,
    make_betas,
    q_sample,
    q_sample_from,
    slerp,
    snr,
)

SD15 = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, timestep_spacing="leading",
            steps_offset=1, clip_sample=False)
DIFFUSERS_KIND = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}


def toy_eps_fn(alphas_cumprod, mu=0.3, s=0.5):
    """The exact ε-predictor for Gaussian data x_0 ~ N(mu, s² I): smooth and non-trivial."""

    def eps_fn(x, t):
        a = alphas_cumprod[t].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return (1 - a) ** 0.5 * (x - a**0.5 * mu) / (a * s**2 + 1 - a)

    return eps_fn


def wiggly_eps_fn(x, t):
    """A nonlinear function of x and t, so that step-for-step comparisons exercise every term."""
    tt = t.float().reshape(-1, *([1] * (x.ndim - 1))) / 1000
    return torch.tanh(x * (1 + tt)) * 0.8 + torch.sin(3 * x + tt) * 0.3


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "cosine"])
@pytest.mark.parametrize("n", [1000, 50])
def test_betas_equal_diffusers(kind, n):
    ours = make_betas(kind, n)
    kw = {} if kind == "cosine" else dict(zip(("beta_start", "beta_end"),
                                              {"linear": (1e-4, 0.02), "scaled_linear": (0.00085, 0.012)}[kind]))
    ref = DDPMScheduler(num_train_timesteps=n, beta_schedule=DIFFUSERS_KIND[kind], **kw)
    assert ours.dtype == torch.float32 and ours.shape == (n,)
    torch.testing.assert_close(ours, ref.betas, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(alpha_bar(ours), ref.alphas_cumprod, atol=1e-7, rtol=1e-6)


def test_custom_beta_range_and_snr():
    ours = make_betas("linear", 200, 1e-3, 0.05)
    ref = DDPMScheduler(num_train_timesteps=200, beta_start=1e-3, beta_end=0.05)
    torch.testing.assert_close(ours, ref.betas)
    ab = alpha_bar(ours)
    torch.testing.assert_close(snr(ab), ab / (1 - ab))
    torch.testing.assert_close(log_snr(ab), torch.log(ab / (1 - ab)), atol=1e-5, rtol=1e-5)
    assert bool((log_snr(ab)[1:] < log_snr(ab)[:-1]).all())  # SNR falls monotonically


def test_q_sample_equals_add_noise():
    ref = DDPMScheduler(num_train_timesteps=1000, **SD15)
    ours = make_betas("scaled_linear", 1000)
    x0, noise = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    t = torch.tensor([0, 10, 500, 999])
    torch.testing.assert_close(q_sample(x0, t, noise, alpha_bar(ours)), ref.add_noise(x0, noise, t))
    # a jump from s to t equals the two-stage forward process in distribution: check the mean and variance
    ab = alpha_bar(ours)
    x_s = torch.zeros(200_000)
    x_t = q_sample_from(x_s + 1.0, 100, 400, torch.randn(200_000), ab)
    assert abs(x_t.mean().item() - (ab[400] / ab[100]).sqrt().item()) < 1e-2
    assert abs(x_t.var().item() - (1 - ab[400] / ab[100]).item()) < 1e-2


@pytest.mark.parametrize("n_steps", [1, 10, 50, 37, 200])
def test_ddim_equals_diffusers_step_for_step(n_steps):
    ref = DDIMScheduler(num_train_timesteps=1000, set_alpha_to_one=False, **SD15)
    ref.set_timesteps(n_steps)
    ours = DDIMSampler(make_betas("scaled_linear", 1000), n_steps=n_steps)
    assert torch.equal(ours.timesteps, ref.timesteps)
    x = torch.randn(2, 4, 8, 8)
    ref_x, steps = x.clone(), []
    for t in ref.timesteps:
        out = ref.step(wiggly_eps_fn(ref_x, t.expand(2)), t, ref_x)
        ref_x = out.prev_sample
        steps.append((out.prev_sample, out.pred_original_sample))
    _, traj = ours.sample(wiggly_eps_fn, x, return_trajectory=True)
    for i, (prev, x0) in enumerate(steps):
        torch.testing.assert_close(traj.x0_pred[i], x0, atol=1e-5, rtol=1e-5)
        nxt = traj.x_t[i + 1] if i + 1 < len(steps) else traj.sample
        torch.testing.assert_close(nxt, prev, atol=1e-5, rtol=1e-5)


def test_ddim_eta_equals_diffusers_with_same_generator():
    ref = DDIMScheduler(num_train_timesteps=1000, set_alpha_to_one=False, **SD15)
    ref.set_timesteps(20)
    x = torch.randn(2, 3, 6, 6)
    g = torch.Generator().manual_seed(7)
    ref_x = x.clone()
    for t in ref.timesteps:
        ref_x = ref.step(wiggly_eps_fn(ref_x, t.expand(2)), t, ref_x, eta=0.7, generator=g).prev_sample
    ours = DDIMSampler(make_betas("scaled_linear", 1000), n_steps=20, eta=0.7)
    out = ours.sample(wiggly_eps_fn, x, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(out, ref_x, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind,n_steps", [("linear", None), ("cosine", 25)])
def test_ddpm_equals_diffusers_with_same_noise(kind, n_steps):
    n_train = 200  # all-step DDPM over a shorter chain keeps the test fast
    kw = {} if kind == "cosine" else dict(beta_start=1e-4, beta_end=0.02)
    ref = DDPMScheduler(num_train_timesteps=n_train, beta_schedule=DIFFUSERS_KIND[kind], clip_sample=False,
                        timestep_spacing="leading", steps_offset=1, **kw)
    if n_steps is not None:
        ref.set_timesteps(n_steps)
    ours = DDPMSampler(make_betas(kind, n_train), n_steps=n_steps)
    assert torch.equal(ours.timesteps, ref.timesteps)
    x = torch.randn(2, 1, 8, 8)
    g = torch.Generator().manual_seed(3)
    ref_x = x.clone()
    for t in ref.timesteps:
        ref_x = ref.step(wiggly_eps_fn(ref_x, t.expand(2)), t, ref_x, generator=g).prev_sample
    out = ours.sample(wiggly_eps_fn, x, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out, ref_x, atol=1e-4, rtol=1e-4)
    # a different seed gives a different result: the noise really enters
    other = ours.sample(wiggly_eps_fn, x, generator=torch.Generator().manual_seed(4))
    assert (other - ref_x).abs().max() > 1e-2


def test_ddim_clipped_model_output_equals_diffusers():
    ref = DDIMScheduler(num_train_timesteps=1000, set_alpha_to_one=False, **{**SD15, "clip_sample": True})
    ref.set_timesteps(10)
    ours = DDIMSampler(make_betas("scaled_linear", 1000), n_steps=10, clip_sample=True, use_clipped_model_output=True)
    x = torch.randn(2, 1, 6, 6) * 3  # large enough that x̂0 gets clipped
    for t in ref.timesteps[:4]:
        eps = wiggly_eps_fn(x, t.expand(2))
        want = ref.step(eps, t, x, use_clipped_model_output=True)
        got = ours.step(eps, int(t), x)
        torch.testing.assert_close(got.x0_pred, want.pred_original_sample)
        torch.testing.assert_close(got.x_prev, want.prev_sample, atol=1e-5, rtol=1e-5)
        x = want.prev_sample


def test_ddpm_step_api_and_clip():
    s = DDPMSampler(make_betas("linear", 100), clip_sample=True)
    x = torch.randn(1, 1, 4, 4) * 10
    x_prev, x0 = s.step(torch.zeros_like(x), 50, x, noise=torch.zeros_like(x))
    assert x0.abs().max() <= 1.0 and x_prev.shape == x.shape
    assert s.prev_timestep(50) == 49 and s.prev_timestep(0) == -1


def test_ddim_inversion_round_trip():
    """Image -> noise -> image with the exact Gaussian denoiser (data std 0.5).

    Inversion assumes ε(x_{t'}, t) ≈ ε(x_t, t), a first-order error: the stated tolerance is a
    max abs error < 0.1 at 50 steps (mean < 0.03), and doubling the steps halves it.
    """
    betas = make_betas("scaled_linear", 1000)
    eps_fn = toy_eps_fn(alpha_bar(betas))
    x0 = 0.3 + 0.5 * torch.randn(4, 1, 16, 16)
    errors = {}
    for n in (50, 100):
        sampler = DDIMSampler(betas, n_steps=n)
        x_T = sampler.invert(eps_fn, x0)
        assert 0.8 < x_T.std() < 1.2  # it really became noise-like
        err = (sampler.sample(eps_fn, x_T) - x0).abs()
        errors[n] = err.max().item()
        if n == 50:
            assert err.mean().item() < 0.03
    assert errors[50] < 0.1
    assert errors[100] < 0.6 * errors[50]
    # a wrong inversion (plain forward noising with the same x_T statistics) does not reconstruct
    sampler = DDIMSampler(betas, n_steps=50)
    wrong = sampler.q_sample(x0, 981, torch.randn_like(x0))
    assert (sampler.sample(eps_fn, wrong) - x0).abs().max().item() > 0.5


def test_guidance_formula_and_wrapper():
    eu, ec = torch.randn(3, 2), torch.randn(3, 2)
    torch.testing.assert_close(guided_eps(eu, ec, 0.0), eu)
    torch.testing.assert_close(guided_eps(eu, ec, 1.0), ec)
    torch.testing.assert_close(guided_eps(eu, ec, 7.5), eu + 7.5 * (ec - eu))

    calls = []

    def model(x, t, cond):  # ε depends on the condition, so guidance is visible
        calls.append(x.shape[0])
        return x * 0.1 + cond[:, None, None, None] + t[:, None, None, None] * 0.0

    x, t = torch.randn(3, 1, 2, 2), torch.full((3,), 5)
    cond, uncond = torch.tensor([1.0, 2.0, 3.0]), torch.zeros(1)
    out = ClassifierFreeGuidance(model, cond, uncond, guidance_scale=3.0)(x, t)
    expected = x * 0.1 + 3.0 * cond[:, None, None, None]
    torch.testing.assert_close(out, expected)
    assert calls == [6]  # one batched forward of 2B
    out1 = ClassifierFreeGuidance(model, cond, None, guidance_scale=1.0)(x, t)
    torch.testing.assert_close(out1, x * 0.1 + cond[:, None, None, None])


def test_trajectory_callback_and_start_index():
    betas = make_betas("linear", 1000)
    s = DDIMSampler(betas, n_steps=10)
    seen = []

    def hook(info):
        seen.append((info.i, info.t, info.t_prev))
        return torch.zeros_like(info.x_prev) if info.i == 8 else None

    x, traj = s.sample(toy_eps_fn(alpha_bar(betas)), torch.randn(2, 1, 4, 4), callback=hook, return_trajectory=True)
    assert [t for _, t, _ in seen] == s.timesteps.tolist() == traj.timesteps
    assert seen[-1][2] == -1 and traj.x_t.shape == (10, 2, 1, 4, 4) and traj.x0_pred.shape == (10, 2, 1, 4, 4)
    assert torch.equal(traj.x_t[9], torch.zeros(2, 1, 4, 4))  # the hook's replacement was used
    assert s.start_index(1.0) == 0 and s.start_index(0.0) == 10 and s.start_index(0.55) == 5
    _, traj2 = s.sample(toy_eps_fn(alpha_bar(betas)), torch.randn(2, 1, 4, 4), start_index=5,
                        return_trajectory=True)
    assert traj2.timesteps == s.timesteps[5:].tolist()
    # renoise from t_prev back to t matches the schedule's variance
    r = s.renoise(torch.zeros(100_000), 1, 101, generator=torch.Generator().manual_seed(0))
    ab = alpha_bar(betas)
    assert abs(r.var().item() - (1 - ab[101] / ab[1]).item()) < 2e-3


def test_loss_is_mse_to_noise():
    ab = alpha_bar(make_betas("linear", 1000))
    x0 = torch.randn(8, 1, 4, 4)
    t, noise = torch.randint(0, 1000, (8,)), torch.randn(8, 1, 4, 4)
    perfect = diffusion_loss(lambda xt, tt: noise, x0, ab, t=t, noise=noise)
    zero = diffusion_loss(lambda xt, tt: torch.zeros_like(xt), x0, ab, t=t, noise=noise)
    assert perfect.item() == 0.0
    torch.testing.assert_close(zero, (noise**2).mean())
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    f = lambda xt, tt: xt  # noqa: E731
    assert diffusion_loss(f, x0, ab, generator=g1).item() == diffusion_loss(f, x0, ab, generator=g2).item()


def test_min_snr_weighting_scales_each_sample_by_min_snr_gamma_over_snr():
    ab = alpha_bar(make_betas("scaled_linear", 1000))
    t = torch.tensor([5, 300, 900])  # SNR far above, near and below γ = 5
    x0, noise = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    zero = lambda xt, tt: torch.zeros_like(xt)  # noqa: E731  per-sample MSE = mean(noise²)
    snr_t = ab[t] / (1 - ab[t])
    per_sample = (noise**2).mean((1, 2, 3))
    weight = snr_t.clamp(max=5.0) / snr_t  # Hang et al. 2023, ε-prediction
    got = diffusion_loss(zero, x0, ab, t=t, noise=noise, min_snr_gamma=5.0)
    torch.testing.assert_close(got, (per_sample * weight).mean())
    assert weight[0] < 0.1 and weight[2] == 1.0  # the easy low-noise step is down-weighted
    # γ above every SNR: every weight is 1, the plain MSE
    torch.testing.assert_close(diffusion_loss(zero, x0, ab, t=t, noise=noise, min_snr_gamma=1e9),
                               diffusion_loss(zero, x0, ab, t=t, noise=noise))
    with pytest.raises(ValueError, match="min_snr_gamma"):
        diffusion_loss(zero, x0, ab, t=t, noise=noise, min_snr_gamma=0.0)


def test_slerp_stays_on_sphere():
    a, b = torch.randn(2, 4096), torch.randn(2, 4096)
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b, atol=1e-5, rtol=1e-5)
    mid = slerp(a, b, 0.5)
    assert abs(mid.norm(dim=1).mean().item() - math.sqrt(4096)) < 3.0
    assert ((a + b) / 2).norm(dim=1).mean().item() < 0.8 * math.sqrt(4096)


def test_bad_inputs_raise_clear_errors():
    betas = make_betas("linear", 1000)
    with pytest.raises(ValueError, match="unknown schedule kind"):
        make_betas("quadratic", 10)
    with pytest.raises(ValueError, match="takes no beta_start"):
        make_betas("cosine", 10, 1e-4, 0.02)
    with pytest.raises(ValueError, match="beta_start <= beta_end"):
        make_betas("linear", 10, 0.02, 1e-4)
    with pytest.raises(ValueError, match="n_steps must be in \\[1, 1000\\]"):
        DDIMSampler(betas, n_steps=1001)
    with pytest.raises(ValueError, match="n_steps must be in \\[1, 1000\\]"):
        DDIMSampler(betas, n_steps=0)
    with pytest.raises(ValueError, match="n_steps must be in \\[1, 1000\\]"):
        DDPMSampler(betas, n_steps=0)
    with pytest.raises(ValueError, match="beyond the last training timestep"):
        DDIMSampler(betas, n_steps=1000)  # leading spacing + offset 1 would start at t = 1000
    with pytest.raises(TypeError, match="n_steps must be an int"):
        DDIMSampler(betas, n_steps=50.0)
    with pytest.raises(ValueError, match="eta must be >= 0"):
        DDIMSampler(betas, n_steps=50, eta=-0.1)
    with pytest.raises(ValueError, match="needs an unconditional input"):
        ClassifierFreeGuidance(lambda x, t, c: x, torch.zeros(2), None, guidance_scale=3.0)
    with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
        ClassifierFreeGuidance(lambda x, t, c: x, torch.zeros(2), torch.zeros(1), guidance_scale=-1.0)
    with pytest.raises(ValueError, match="every beta must lie in"):
        DDPMSampler(torch.tensor([0.1, 1.5]))
    with pytest.raises(ValueError, match="model output shape"):
        DDIMSampler(betas, 10).step(torch.zeros(1, 3), 1, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="DDIM inversion needs the deterministic sampler"):
        DDIMSampler(betas, 10, eta=1.0).invert(lambda x, t: x, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="strength must be a number in \\[0, 1\\]"):
        DDIMSampler(betas, 10).start_index(1.5)
    with pytest.raises(ValueError, match="timesteps must lie in"):
        q_sample(torch.zeros(1, 2), 1000, torch.zeros(1, 2), alpha_bar(betas))
    with pytest.raises(ValueError, match="a callback may return None or a tensor"):
        DDIMSampler(betas, 2).sample(lambda x, t: x, torch.zeros(1, 2), callback=lambda info: torch.zeros(3))


# ------------------------------------------------------------ scheduler configs
from course_lib.diffusion import SchedulerConfig, make_sampler, spaced_timesteps  # noqa: E402

SPACINGS = ["leading", "trailing", "linspace"]


@pytest.mark.parametrize("n_train", [1000, 37])
@pytest.mark.parametrize("spacing", SPACINGS)
def test_timesteps_equal_diffusers_for_every_step_count(spacing, n_train):
    offset = 1 if spacing == "leading" else 0
    ddim = DDIMScheduler(num_train_timesteps=n_train, timestep_spacing=spacing, steps_offset=offset)
    ddpm = DDPMScheduler(num_train_timesteps=n_train, timestep_spacing=spacing, steps_offset=offset)
    artefacts = 0
    for n in range(1, n_train + (0 if spacing == "leading" else 1)):  # leading + offset 1 can't take all N
        ddim.set_timesteps(n)
        ddpm.set_timesteps(n)
        ours = spaced_timesteps(n_train, n, spacing, offset)
        assert torch.equal(ddim.timesteps, ddpm.timesteps)
        if len(ddim.timesteps) == n + 1:  # numpy's arange overshoots: diffusers ends on t = -1
            assert spacing == "trailing" and int(ddim.timesteps[-1]) == -1
            ref, artefacts = ddim.timesteps[:-1], artefacts + 1
        else:
            ref = ddim.timesteps
        assert torch.equal(ours, ref), n
        assert len(ours) == n and bool((ours >= 0).all()) and bool((ours[1:] < ours[:-1]).all())
    if spacing == "trailing" and n_train == 1000:
        assert artefacts > 0  # the case above really occurs (e.g. n = 61)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("spacing", SPACINGS)
def test_ddim_from_config_equals_diffusers_step_for_step(spacing, prediction_type):
    config = SchedulerConfig(prediction_type=prediction_type, timestep_spacing=spacing,
                             steps_offset=1 if spacing == "leading" else 0, set_alpha_to_one=spacing == "linspace")
    ref = DDIMScheduler(**config.to_diffusers())
    ref.set_timesteps(12)
    ours = DDIMSampler.from_config(config, 12, eta=0.6)
    assert torch.equal(ours.timesteps, ref.timesteps)
    x = torch.randn(2, 4, 8, 8)
    g_ref, g_ours = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    ref_x, our_x = x.clone(), x.clone()
    for t in ref.timesteps:
        want = ref.step(wiggly_eps_fn(ref_x, t.expand(2)), t, ref_x, eta=0.6, generator=g_ref)
        got = ours.step(wiggly_eps_fn(our_x, t.expand(2)), int(t), our_x, generator=g_ours)
        torch.testing.assert_close(got.x0_pred, want.pred_original_sample, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.x_prev, want.prev_sample, atol=1e-5, rtol=1e-5)
        ref_x, our_x = want.prev_sample, got.x_prev


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("spacing", SPACINGS)
def test_ddpm_from_config_equals_diffusers_step_for_step(spacing, prediction_type):
    config = SchedulerConfig(beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type,
                             timestep_spacing=spacing, clip_sample=True, clip_sample_range=2.0)
    ref = DDPMScheduler(**{k: v for k, v in config.to_diffusers().items() if k != "set_alpha_to_one"})
    ref.set_timesteps(15)
    ours = DDPMSampler.from_config(config, 15)
    assert torch.equal(ours.timesteps, ref.timesteps)
    x = torch.randn(2, 1, 8, 8) * 2
    g_ref, g_ours = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    ref_x, our_x = x.clone(), x.clone()
    for t in ref.timesteps:
        want = ref.step(wiggly_eps_fn(ref_x, t.expand(2)) * 3, t, ref_x, generator=g_ref)  # ×3: clipping acts
        got = ours.step(wiggly_eps_fn(our_x, t.expand(2)) * 3, int(t), our_x, generator=g_ours)
        torch.testing.assert_close(got.x0_pred, want.pred_original_sample, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.x_prev, want.prev_sample, atol=1e-4, rtol=1e-4)
        ref_x, our_x = want.prev_sample, got.x_prev


def test_scheduler_config_reads_diffusers_files():
    # what SD v1.5 and SD 2.1 ship (their scheduler/scheduler_config.json)
    sd15 = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
            "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
            "clip_sample": False}
    assert SchedulerConfig.from_diffusers(sd15) == SchedulerConfig.sd15() == SchedulerConfig()
    sd21 = {**sd15, "_class_name": "DDIMScheduler", "prediction_type": "v_prediction"}
    assert SchedulerConfig.from_diffusers(sd21).prediction_type == "v_prediction"
    # a full diffusers config round-trips; absent fields mean diffusers' defaults
    full = dict(DDIMScheduler(timestep_spacing="trailing", prediction_type="v_prediction").config)
    cfg = SchedulerConfig.from_diffusers(full)
    assert cfg.timestep_spacing == "trailing" and cfg.prediction_type == "v_prediction"
    assert SchedulerConfig.from_diffusers({}) == SchedulerConfig.from_diffusers(dict(DDIMScheduler().config))
    torch.testing.assert_close(SchedulerConfig.from_diffusers({}).betas(), DDIMScheduler().betas)
    torch.testing.assert_close(SchedulerConfig().betas(), make_betas("scaled_linear", 1000))


@pytest.mark.parametrize("field,value,message", [
    ("thresholding", True, "thresholding=True is not supported.*allowed: False"),
    ("rescale_betas_zero_snr", True, "rescale_betas_zero_snr=True is not supported.*allowed: False"),
    ("trained_betas", [0.1, 0.2], "trained_betas=.*allowed: None"),
    ("variance_type", "learned_range", "variance_type='learned_range'.*allowed: 'fixed_small'"),
    ("prediction_type", "sample", "prediction_type must be one of 'epsilon', 'v_prediction'"),
    ("timestep_spacing", "karras", "timestep_spacing must be one of 'leading', 'trailing', 'linspace'"),
    ("beta_schedule", "sigmoid", "beta_schedule must be one of 'linear', 'scaled_linear', 'squaredcos_cap_v2'"),
    ("use_karras_sigmas", True, "'use_karras_sigmas' is not supported.*known fields: beta_end"),
])
def test_scheduler_config_refuses_what_it_does_not_implement(field, value, message):
    with pytest.raises(ValueError, match=message):
        SchedulerConfig.from_diffusers({field: value})


def test_make_sampler_and_its_errors():
    cfg = SchedulerConfig(timestep_spacing="trailing")
    assert isinstance(make_sampler(cfg, "ddim", 10, eta=0.5), DDIMSampler)
    ddpm = make_sampler(cfg, "ddpm", 10)
    assert isinstance(ddpm, DDPMSampler) and ddpm.timesteps[0] == 999
    with pytest.raises(ValueError, match="sampler must be one of 'ddim', 'ddpm'; got 'euler'"):
        make_sampler(cfg, "euler", 10)
    with pytest.raises(ValueError, match="eta=0.5 applies to the DDIM sampler only"):
        make_sampler(cfg, "ddpm", 10, eta=0.5)
    with pytest.raises(TypeError, match="SchedulerConfig.from_diffusers"):
        DDIMSampler.from_config({"prediction_type": "epsilon"}, 10)


# ------------------------------------------------------------ noise: the generator's device
def test_sampling_noise_is_the_same_whatever_the_dtype_or_device():
    """A CPU generator gives the same ancestral noise for float32 and float64 samples, and works
    for samples on another device (``meta`` here; CUDA when there is one)."""
    betas = make_betas("linear", 100)
    sampler = DDPMSampler(betas, n_steps=10)
    x = torch.randn(2, 1, 4, 4)
    a = sampler.sample(wiggly_eps_fn, x, generator=torch.Generator().manual_seed(0))
    b = sampler.sample(wiggly_eps_fn, x.double(), generator=torch.Generator().manual_seed(0))
    assert b.dtype == torch.float64
    torch.testing.assert_close(a.double(), b, atol=1e-5, rtol=1e-5)
    z = sampler.renoise(torch.zeros(2, 3, device="meta"), 10, 50, generator=torch.Generator().manual_seed(0))
    assert z.device.type == "meta"
    x0 = torch.randn(4, 3)
    losses = [diffusion_loss(lambda xt, t: xt.sin(), x0.to(dtype), alpha_bar(betas),
                             generator=torch.Generator().manual_seed(0)) for dtype in (torch.float32, torch.float64)]
    assert losses[1].dtype == torch.float64
    torch.testing.assert_close(losses[0].double(), losses[1], atol=1e-6, rtol=1e-5)  # same t and ε drawn
    if torch.cuda.is_available():  # the real cross-device case
        c = sampler.sample(wiggly_eps_fn, x.cuda(), generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(c.cpu(), a, atol=1e-4, rtol=1e-4)
