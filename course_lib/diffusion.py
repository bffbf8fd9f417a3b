"""Diffusion models: the forward process, the training loss, and the DDPM / DDIM samplers.

Papers and equations (timesteps are 0-based, t = 0 … N-1, as in diffusers):

* forward process, DDPM (Ho et al. 2020) eq. 4:  x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε,  ε ~ N(0, I)
* ε-prediction loss, DDPM Algorithm 1 / eq. 14:  E_{t,x_0,ε} ‖ε - ε_θ(x_t, t)‖²
* predicted clean image, DDPM eq. 15:  x̂_0 = (x_t - √(1-ᾱ_t) ε_θ) / √ᾱ_t
* ancestral step, DDPM eq. 6-7 and Algorithm 2: sample the posterior
  q(x_{t'} | x_t, x̂_0) = N(μ̃, β̃ I) with
  μ̃ = √ᾱ_{t'} β'_t / (1-ᾱ_t) · x̂_0 + √α'_t (1-ᾱ_{t'}) / (1-ᾱ_t) · x_t,
  β̃ = (1-ᾱ_{t'}) / (1-ᾱ_t) · β'_t,  where α'_t = ᾱ_t/ᾱ_{t'} and β'_t = 1 - α'_t
  (t' is the next, smaller timestep; t' = t - 1 when every step is taken);
* DDIM step, Song et al. 2021 ("Denoising Diffusion Implicit Models") eq. 12 and 16:
  x_{t'} = √ᾱ_{t'} x̂_0 + √(1-ᾱ_{t'}-σ_t²) ε_θ + σ_t z,
  σ_t = η √((1-ᾱ_{t'})/(1-ᾱ_t)) √(1-ᾱ_t/ᾱ_{t'});  η = 0 is deterministic, η = 1 is DDPM-like;
* classifier-free guidance, Ho & Salimans 2022 eq. 6:  ε̃ = ε_u + w (ε_c - ε_u);
* v-prediction (optional), Salimans & Ho 2022 §4:  v = √ᾱ_t ε - √(1-ᾱ_t) x_0.

By default the samplers reproduce diffusers' ``DDPMScheduler`` and ``DDIMScheduler``
configured as in Stable Diffusion v1.5 (``timestep_spacing="leading"``,
``steps_offset=1``, ``set_alpha_to_one=False``, ``clip_sample=False``): the same
timesteps, and the same result given the same noise (a CPU ``torch.Generator``
seeded alike draws the same numbers in the same order). Any other configuration
diffusers can express and the course implements — ε- or v-prediction, "leading",
"trailing" or "linspace" timesteps, ``clip_sample`` — comes from a ``SchedulerConfig``
(what a model's ``scheduler_config.json`` says)::

    config = SchedulerConfig.from_diffusers(json.load(open("scheduler/scheduler_config.json")))
    sampler = DDIMSampler.from_config(config, n_steps=50, eta=0.0)    # or DDPMSampler.from_config
    sampler = make_sampler(config, "ddim", n_steps=50)               # the pipelines' way

Noise is drawn with ``course_lib.device.randn`` (on the generator's device, then moved).

Sampling loop (``eps_fn(x, t)`` returns ε; ``t`` is a LongTensor ``[B]``)::

    sampler = DDIMSampler(make_betas("scaled_linear", 1000), n_steps=50)
    x0 = sampler.sample(eps_fn, torch.randn(4, 4, 64, 64), generator=g)
    x0, traj = sampler.sample(eps_fn, x_T, return_trajectory=True)   # traj.x_t, traj.x0_pred

Step-level API (what latent diffusion, image-to-image and inpainting build on)::

    sampler.timesteps                          # LongTensor [n], descending
    sampler.prev_timestep(t)                   # the timestep a step from t lands on (-1: the end)
    sampler.alpha_bar_at(t)                    # ᾱ_t, with ᾱ_{-1} = sampler.final_alpha_bar
    x_prev, x0 = sampler.step(eps, t, x, generator=None, noise=None)   # one reverse step
    x_t = sampler.q_sample(x0, t, noise)       # jump from clean to timestep t
    x_t = sampler.renoise(x_prev, t_prev, t, generator=None, noise=None)  # forward again (RePaint)
    i = sampler.start_index(strength)          # image-to-image: begin at sampler.timesteps[i]
    sampler.sample(eps_fn, x, start_index=i, callback=hook)

``callback(info: StepInfo)`` runs after every step; returning a tensor replaces
``info.x_prev`` (the sample the next step starts from), e.g. to paste known,
re-noised pixels outside an inpainting mask. Returning ``None`` changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from .checks import check_choice, check_int, check_number
from .device import randn
from .schedules import (PREDICTION_TYPES, SCHEDULES, TIMESTEP_SPACINGS, SchedulerConfig, _check_betas, alpha_bar,
                        log_snr, make_betas, snr)

__all__ = [
    "SCHEDULES", "make_betas", "alpha_bar", "snr", "log_snr", "SchedulerConfig", "SAMPLERS", "make_sampler",
    "q_sample", "q_sample_from", "predict_x0", "predict_eps", "velocity", "diffusion_loss",
    "StepOutput", "StepInfo", "Trajectory", "DDPMSampler", "DDIMSampler",
    "guided_eps", "ClassifierFreeGuidance", "slerp",
]

SAMPLERS = ("ddim", "ddpm")  # the update rules a pipeline can use


# ----------------------------------------------------------------------------- forward process

def _gather(alphas_cumprod: torch.Tensor, t, like: torch.Tensor) -> torch.Tensor:
    """ᾱ_t broadcastable against ``like`` ``[B, ...]``: t is an int or a LongTensor [B]."""
    t = torch.as_tensor(t, device=alphas_cumprod.device)
    if t.is_floating_point():
        raise TypeError(f"timesteps must be integers, got dtype {t.dtype}")
    n = alphas_cumprod.shape[0]
    if bool(((t < 0) | (t >= n)).any()):
        raise ValueError(f"timesteps must lie in [0, {n - 1}], got {t.tolist()}")
    a = alphas_cumprod[t].to(device=like.device, dtype=like.dtype)
    return a.reshape(a.shape + (1,) * (like.ndim - a.ndim))  # [B, 1, 1, 1] or []


def q_sample(x0: torch.Tensor, t, noise: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε (DDPM eq. 4); equal to diffusers' ``add_noise``.

    x0, noise: ``[B, C, H, W]``; t: int or LongTensor ``[B]``.
    """
    if noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} must equal x0 shape {tuple(x0.shape)}")
    a = _gather(alphas_cumprod, t, x0)
    return a**0.5 * x0 + (1 - a) ** 0.5 * noise


def q_sample_from(x_s: torch.Tensor, s: int, t: int, noise: torch.Tensor, alphas_cumprod: torch.Tensor,
                  final_alpha_bar: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Noise forward from timestep s to a later t: q(x_t | x_s) = N(√(ᾱ_t/ᾱ_s) x_s, (1-ᾱ_t/ᾱ_s) I).

    s = -1 means "clean" with ᾱ_{-1} = ``final_alpha_bar``. This is the jump back
    up the chain that RePaint (Lugmayr et al. 2022, Algorithm 1) takes.
    """
    if not (isinstance(s, int) and isinstance(t, int)) or not -1 <= s < t < alphas_cumprod.shape[0]:
        raise ValueError(f"need integers -1 <= s < t < {alphas_cumprod.shape[0]}, got s={s!r}, t={t!r}")
    if noise.shape != x_s.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} must equal x_s shape {tuple(x_s.shape)}")
    a_s = alphas_cumprod[s] if s >= 0 else torch.as_tensor(final_alpha_bar, dtype=alphas_cumprod.dtype)
    ratio = (alphas_cumprod[t] / a_s).to(device=x_s.device, dtype=x_s.dtype)
    return ratio**0.5 * x_s + (1 - ratio) ** 0.5 * noise


def predict_x0(x_t, eps, t, alphas_cumprod):
    """x̂_0 = (x_t - √(1-ᾱ_t) ε) / √ᾱ_t (DDPM eq. 15)."""
    a = _gather(alphas_cumprod, t, x_t)
    return (x_t - (1 - a) ** 0.5 * eps) / a**0.5


def predict_eps(x_t, x0, t, alphas_cumprod):
    """ε = (x_t - √ᾱ_t x_0) / √(1-ᾱ_t), the inverse of ``predict_x0``."""
    a = _gather(alphas_cumprod, t, x_t)
    return (x_t - a**0.5 * x0) / (1 - a) ** 0.5


def velocity(x0, noise, t, alphas_cumprod):
    """v = √ᾱ_t ε - √(1-ᾱ_t) x_0 (Salimans & Ho 2022), the v-prediction target."""
    a = _gather(alphas_cumprod, t, x0)
    return a**0.5 * noise - (1 - a) ** 0.5 * x0


def diffusion_loss(model_fn: Callable, x0: torch.Tensor, alphas_cumprod: torch.Tensor, t=None, noise=None,
                   generator: torch.Generator | None = None, prediction_type: str = "epsilon",
                   min_snr_gamma: float | None = None) -> torch.Tensor:
    """The simple DDPM loss (Algorithm 1): MSE between the model's output and ε (or v).

    ``model_fn(x_t, t) -> prediction`` with x_t ``[B, ...]`` and t a LongTensor ``[B]``.
    t defaults to uniform draws from {0, …, N-1}, noise to N(0, I), both from ``generator``.
    ``min_snr_gamma`` = γ weights each sample's MSE by min(SNR_t, γ) / SNR_t for ε
    (min(SNR_t, γ) / (SNR_t + 1) for v): min-SNR-γ weighting (Hang et al. 2023, "Efficient
    Diffusion Training via Min-SNR Weighting Strategy"), which keeps the many easy low-noise
    timesteps from dominating. None: the plain MSE.
    """
    check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
    if min_snr_gamma is not None:
        check_number("min_snr_gamma", min_snr_gamma, 0.0, low_open=True)
    n, b = alphas_cumprod.shape[0], x0.shape[0]
    if t is None:  # drawn on the generator's device, then moved (as the noise, device.randn)
        gen_device = generator.device if generator is not None else torch.device("cpu")
        t = torch.randint(0, n, (b,), generator=generator, device=gen_device).to(x0.device)
    if noise is None:
        noise = randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = q_sample(x0, t, noise, alphas_cumprod)
    target = noise if prediction_type == "epsilon" else velocity(x0, noise, t, alphas_cumprod)
    pred = model_fn(x_t, t)
    if pred.shape != target.shape:
        raise ValueError(f"model output shape {tuple(pred.shape)} must equal the input shape {tuple(target.shape)}")
    if min_snr_gamma is None:
        return F.mse_loss(pred, target)
    per_sample = ((pred - target) ** 2).mean(dim=tuple(range(1, pred.dim())))  # [B]
    ratio = snr(alphas_cumprod)[t]  # SNR_t = ᾱ_t / (1 − ᾱ_t)  [B]
    denominator = ratio if prediction_type == "epsilon" else ratio + 1
    return (per_sample * ratio.clamp(max=min_snr_gamma) / denominator).mean()


# ----------------------------------------------------------------------------- samplers

class StepOutput(NamedTuple):
    """What one reverse step returns: the next sample and the predicted clean image."""

    x_prev: torch.Tensor  # x_{t'}  [B, C, H, W]
    x0_pred: torch.Tensor  # x̂_0   [B, C, H, W]


@dataclass
class StepInfo:
    """Handed to ``callback`` after each step (i counts steps from 0)."""

    i: int
    t: int  # the timestep this step started from
    t_prev: int  # the timestep it landed on (-1: the end of sampling)
    x_t: torch.Tensor  # sample before the step
    x_prev: torch.Tensor  # sample after the step
    x0_pred: torch.Tensor  # x̂_0 predicted at t
    eps: torch.Tensor  # the ε used (after guidance)


@dataclass
class Trajectory:
    """Every step of one sampling run, on the CPU: ``x_t[i]`` entered step i, ``x0_pred[i]`` came out of it."""

    timesteps: list[int]  # [n]
    x_t: torch.Tensor  # [n, B, C, H, W]
    x0_pred: torch.Tensor  # [n, B, C, H, W]
    sample: torch.Tensor  # [B, C, H, W], the final result


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, I) noise shaped like x (``course_lib.device.randn``: drawn on the generator's device, then moved)."""
    return randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def spaced_timesteps(num_train_timesteps: int, n_steps: int, spacing: str = "leading",
                     steps_offset: int = 0) -> torch.Tensor:
    """Which ``n_steps`` of the N training timesteps a sampler visits, descending (LongTensor ``[n]``).

    The three spacings of Lin et al. 2024 ("Common Diffusion Noise Schedules and Sample
    Steps are Flawed", table 2), as diffusers' schedulers compute them:

    * "leading":  k·⌊N/n⌋ + steps_offset, k = n-1 … 0 (SD 1.x: 981, 961, … 1 for n = 50);
    * "trailing": round(N − k·N/n) − 1, k = 0 … n-1 (starts at N−1, the pure-noise end: 999, 979, … 19);
    * "linspace": round(k·(N−1)/(n−1)), k = n-1 … 0 (999, 979, … 0).

    Floating-point steps follow numpy's arithmetic, so rounding ties land where diffusers'
    do. (Where numpy's ``arange`` yields one value too many for "trailing", diffusers
    ends on the invalid timestep −1; here the n valid ones are kept.)
    """
    n_train = check_int("num_train_timesteps", num_train_timesteps, 1)
    check_int("n_steps", n_steps, 1, n_train)
    check_choice("timestep_spacing", spacing, TIMESTEP_SPACINGS)
    check_int("steps_offset", steps_offset, 0)
    if spacing == "leading":
        timesteps = torch.arange(n_steps - 1, -1, -1) * (n_train // n_steps) + steps_offset
        if int(timesteps[0]) >= n_train:
            raise ValueError(f"n_steps={n_steps} with steps_offset={steps_offset} would start at timestep "
                             f"{int(timesteps[0])}, beyond the last training timestep {n_train - 1}; "
                             f"use fewer steps, steps_offset=0 or timestep_spacing='trailing'")
        return timesteps
    k = torch.arange(n_steps, dtype=torch.float64)
    if spacing == "trailing":
        delta = (n_train - n_train / n_steps) - n_train  # numpy's arange steps by (start + step) - start
        return (n_train + k * delta).round().long() - 1
    if n_steps == 1:
        return torch.zeros(1, dtype=torch.long)
    points = k * ((n_train - 1) / (n_steps - 1))  # numpy's linspace: k · step, and exactly N-1 at the end
    points[-1] = n_train - 1
    return points.round().long().flip(0)


class _Sampler:
    """Shared machinery: the schedule, the timesteps, the sampling loop and its trajectory."""

    def __init__(self, betas: torch.Tensor, clip_sample: bool, prediction_type: str, clip_sample_range: float = 1.0):
        self.betas = _check_betas(betas).detach().to("cpu", torch.float32)  # [N]
        self.alphas_cumprod = alpha_bar(self.betas)  # ᾱ [N]
        self.num_train_timesteps = self.betas.shape[0]
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        if not isinstance(clip_sample, bool):
            raise TypeError(f"clip_sample must be a bool, got {type(clip_sample).__name__}")
        self.prediction_type = prediction_type
        self.clip_sample = clip_sample
        self.clip_sample_range = check_number("clip_sample_range", clip_sample_range, 0.0, low_open=True)
        self.final_alpha_bar = torch.tensor(1.0)  # ᾱ_{-1}: set by subclasses
        self.timesteps = torch.arange(self.num_train_timesteps - 1, -1, -1)  # set by subclasses

    def alpha_bar_at(self, t: int) -> torch.Tensor:
        """ᾱ_t as a 0-dim tensor; t = -1 (or any t < 0) gives ``final_alpha_bar``."""
        return self.alphas_cumprod[t] if t >= 0 else self.final_alpha_bar

    def _to_eps_x0(self, model_output, x, a_t):
        """(x̂_0, ε̂) from the model's output, for ε- or v-prediction."""
        b_t = 1 - a_t
        if self.prediction_type == "epsilon":
            eps = model_output
            x0 = (x - b_t ** (0.5) * eps) / a_t ** (0.5)
        else:  # v-prediction: x̂_0 = √ᾱ x - √(1-ᾱ) v,  ε̂ = √ᾱ v + √(1-ᾱ) x
            x0 = (a_t**0.5) * x - (b_t**0.5) * model_output
            eps = (a_t**0.5) * model_output + (b_t**0.5) * x
        if self.clip_sample:
            x0 = x0.clamp(-self.clip_sample_range, self.clip_sample_range)
        return x0, eps

    def q_sample(self, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
        """Forward process with this sampler's schedule (see module ``q_sample``)."""
        return q_sample(x0, t, noise, self.alphas_cumprod)

    def renoise(self, x: torch.Tensor, t_from: int, t_to: int, generator=None, noise=None) -> torch.Tensor:
        """Take x from timestep ``t_from`` forward to the later ``t_to`` (t_from = -1: clean)."""
        noise = _randn_like(x, generator) if noise is None else noise
        return q_sample_from(x, int(t_from), int(t_to), noise, self.alphas_cumprod, self.final_alpha_bar)

    def start_index(self, strength: float) -> int:
        """Image-to-image: where to enter ``timesteps`` so that ``strength`` of the steps remain.

        strength 1 starts from pure noise (index 0), strength 0 does nothing (index n).
        Follows diffusers' img2img pipeline: ``n - min(int(n * strength), n)``.
        """
        if not isinstance(strength, (int, float)) or isinstance(strength, bool) or not 0 <= strength <= 1:
            raise ValueError(f"strength must be a number in [0, 1], got {strength!r}")
        n = len(self.timesteps)
        return n - min(int(n * strength), n)

    def step(self, model_output, t, x, generator=None, noise=None) -> StepOutput:  # pragma: no cover
        raise NotImplementedError

    def _check_step_inputs(self, model_output, t, x) -> int:
        if model_output.shape != x.shape:
            raise ValueError(f"model output shape {tuple(model_output.shape)} must equal sample shape {tuple(x.shape)}")
        t = int(t)
        if not 0 <= t < self.num_train_timesteps:
            raise ValueError(f"timestep must be in [0, {self.num_train_timesteps - 1}], got {t}")
        return t

    @torch.no_grad()
    def sample(self, eps_fn: Callable, x_T: torch.Tensor, generator: torch.Generator | None = None,
               callback: Callable | None = None, return_trajectory: bool = False, start_index: int = 0):
        """Run the reverse process from ``x_T`` through ``timesteps[start_index:]``.

        ``eps_fn(x, t)`` returns the model output (ε, or v for v-prediction) for x ``[B, ...]``
        and t a LongTensor ``[B]``. Returns x_0, or ``(x_0, Trajectory)`` with ``return_trajectory``.
        """
        if not isinstance(x_T, torch.Tensor) or not x_T.is_floating_point():
            raise TypeError("x_T must be a floating-point torch.Tensor")
        check_int("start_index", start_index, 0, len(self.timesteps))
        x = x_T
        xs, x0s, ts = [], [], []
        for i, t in enumerate(self.timesteps[start_index:].tolist()):
            t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)  # [B]
            model_output = eps_fn(x, t_batch)
            x_prev, x0_pred = self.step(model_output, t, x, generator=generator)
            if return_trajectory:
                xs.append(x.detach().cpu())
                x0s.append(x0_pred.detach().cpu())
                ts.append(t)
            if callback is not None:
                eps = self._to_eps_x0(model_output, x, self.alpha_bar_at(t))[1]
                info = StepInfo(i, t, self.prev_timestep(t), x, x_prev, x0_pred, eps)
                replaced = callback(info)
                if replaced is not None:
                    if not isinstance(replaced, torch.Tensor) or replaced.shape != x_prev.shape:
                        raise ValueError("a callback may return None or a tensor shaped like info.x_prev "
                                         f"{tuple(x_prev.shape)}")
                    x_prev = replaced
            x = x_prev
        if not return_trajectory:
            return x
        empty = x.detach().cpu()[None][:0]
        traj = Trajectory(ts, torch.stack(xs) if xs else empty, torch.stack(x0s) if x0s else empty, x.detach().cpu())
        return x, traj


class DDPMSampler(_Sampler):
    """Ancestral sampling with the posterior variance β̃_t (DDPM, Ho et al. 2020, Algorithm 2).

    ``n_steps=None`` takes all N steps (t = N-1 … 0), as diffusers' ``DDPMScheduler``
    does before ``set_timesteps``; an int takes the ``timestep_spacing`` timesteps
    (``spaced_timesteps``) like ``DDPMScheduler.set_timesteps(n_steps)``, each step
    landing on the next one in the list.
    """

    def __init__(self, betas: torch.Tensor, n_steps: int | None = None, steps_offset: int = 1,
                 clip_sample: bool = False, prediction_type: str = "epsilon", timestep_spacing: str = "leading",
                 clip_sample_range: float = 1.0):
        super().__init__(betas, clip_sample, prediction_type, clip_sample_range)
        self.steps_offset = check_int("steps_offset", steps_offset, 0)
        self.timestep_spacing = check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        self.n_steps = n_steps
        self.final_alpha_bar = torch.tensor(1.0)
        if n_steps is not None:
            self.timesteps = spaced_timesteps(self.num_train_timesteps, n_steps, timestep_spacing, steps_offset)
        self._prev = {int(a): int(b) for a, b in zip(self.timesteps, self.timesteps[1:])}

    @classmethod
    def from_config(cls, config: SchedulerConfig, n_steps: int | None = None) -> "DDPMSampler":
        """The DDPM sampler a ``SchedulerConfig`` describes (diffusers' ``DDPMScheduler.from_config``)."""
        _check_config(config)
        return cls(config.betas(), n_steps, steps_offset=config.steps_offset, clip_sample=config.clip_sample,
                   prediction_type=config.prediction_type, timestep_spacing=config.timestep_spacing,
                   clip_sample_range=config.clip_sample_range)

    def prev_timestep(self, t: int) -> int:
        """The next timestep in ``timesteps`` after t (t - 1 when all steps are taken), -1 after the last."""
        t = int(t)
        if self.n_steps is None:
            return t - 1
        return self._prev.get(t, -1)

    def step(self, model_output, t, x, generator=None, noise=None) -> StepOutput:
        """One ancestral step x_t → x_{t'} (DDPM eq. 6-7): posterior mean plus √β̃ z (no noise at t = 0)."""
        t = self._check_step_inputs(model_output, t, x)
        t_prev = self.prev_timestep(t)
        a_t, a_prev = self.alphas_cumprod[t], self.alpha_bar_at(t_prev)
        b_t, b_prev = 1 - a_t, 1 - a_prev
        alpha_step = a_t / a_prev  # α'_t
        beta_step = 1 - alpha_step  # β'_t
        x0, _ = self._to_eps_x0(model_output, x, a_t)
        coef_x0 = (a_prev ** (0.5) * beta_step) / b_t
        coef_xt = alpha_step ** (0.5) * b_prev / b_t
        x_prev = coef_x0 * x0 + coef_xt * x  # μ̃_t
        if t > 0:
            z = _randn_like(model_output, generator) if noise is None else noise
            var = torch.clamp(b_prev / b_t * beta_step, min=1e-20)  # β̃_t
            x_prev = x_prev + var**0.5 * z
        return StepOutput(x_prev, x0)


class DDIMSampler(_Sampler):
    """Denoising diffusion implicit models (Song et al. 2021), eq. 12 with σ_t(η) of eq. 16.

    ``n_steps`` timesteps in ``timestep_spacing`` (``spaced_timesteps``; SD 1.x: "leading",
    t = k·⌊N/n⌋ + steps_offset). Each step lands ⌊N/n⌋ timesteps lower, as in diffusers'
    ``DDIMScheduler`` for every spacing. With ``set_alpha_to_one=False`` the last step
    lands on ᾱ_0 instead of 1 (SD v1.5).
    """

    def __init__(self, betas: torch.Tensor, n_steps: int, eta: float = 0.0, steps_offset: int = 1,
                 set_alpha_to_one: bool = False, clip_sample: bool = False, prediction_type: str = "epsilon",
                 use_clipped_model_output: bool = False, timestep_spacing: str = "leading",
                 clip_sample_range: float = 1.0):
        super().__init__(betas, clip_sample, prediction_type, clip_sample_range)
        # with clip_sample, re-derive ε̂ from the clipped x̂_0 so the two stay consistent (GLIDE; diffusers'
        # ``use_clipped_model_output``); otherwise many deterministic steps drift towards saturation
        self.use_clipped_model_output = bool(use_clipped_model_output)
        check_int("n_steps", n_steps, 1, self.num_train_timesteps)
        self.n_steps = n_steps
        self.eta = check_number("eta", eta, 0.0)  # 0: deterministic DDIM, 1: DDPM-like
        self.steps_offset = check_int("steps_offset", steps_offset, 0)
        self.timestep_spacing = check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        self.final_alpha_bar = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]
        self.timesteps = spaced_timesteps(self.num_train_timesteps, n_steps, timestep_spacing, steps_offset)
        self.step_ratio = self.num_train_timesteps // n_steps

    @classmethod
    def from_config(cls, config: SchedulerConfig, n_steps: int, eta: float = 0.0,
                    use_clipped_model_output: bool = False) -> "DDIMSampler":
        """The DDIM sampler a ``SchedulerConfig`` describes (diffusers' ``DDIMScheduler.from_config``)."""
        _check_config(config)
        return cls(config.betas(), n_steps, eta, steps_offset=config.steps_offset,
                   set_alpha_to_one=config.set_alpha_to_one, clip_sample=config.clip_sample,
                   prediction_type=config.prediction_type, use_clipped_model_output=use_clipped_model_output,
                   timestep_spacing=config.timestep_spacing, clip_sample_range=config.clip_sample_range)

    def prev_timestep(self, t: int) -> int:
        """t - ⌊N/n⌋; a negative value means the end (ᾱ = ``final_alpha_bar``)."""
        return max(int(t) - self.step_ratio, -1)

    def step(self, model_output, t, x, generator=None, noise=None) -> StepOutput:
        """One DDIM step x_t → x_{t'}: jump to x̂_0, then back out along ε̂ (eq. 12), plus σ_t z if η > 0."""
        t = self._check_step_inputs(model_output, t, x)
        a_t, a_prev = self.alphas_cumprod[t], self.alpha_bar_at(self.prev_timestep(t))
        x0, eps = self._to_eps_x0(model_output, x, a_t)
        if self.use_clipped_model_output:
            eps = (x - a_t ** (0.5) * x0) / (1 - a_t) ** (0.5)
        variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
        std = self.eta * variance ** (0.5)  # σ_t(η), eq. 16
        direction = (1 - a_prev - std**2) ** (0.5) * eps  # "direction pointing to x_t"
        x_prev = a_prev ** (0.5) * x0 + direction
        if self.eta > 0:
            z = _randn_like(model_output, generator) if noise is None else noise
            x_prev = x_prev + std * z
        return StepOutput(x_prev, x0)

    @torch.no_grad()
    def invert(self, eps_fn: Callable, x0: torch.Tensor, callback: Callable | None = None,
               return_trajectory: bool = False):
        """DDIM inversion: run eq. 12 (η = 0) backwards, image → noise, through the timesteps ascending.

        Each step treats ε(x_{t'}, t) ≈ ε(x_t, t), the approximation that makes the
        deterministic ODE reversible for small steps (Song et al. 2021, §4.3; Mokady et
        al. 2023). Sampling the result with this sampler reconstructs x0 up to the
        discretisation error, which shrinks as ``n_steps`` grows.
        Returns x_T (or ``(x_T, Trajectory)``; the trajectory lists the inputs ascending).
        """
        if self.eta != 0:
            raise ValueError(f"DDIM inversion needs the deterministic sampler (eta=0), got eta={self.eta}")
        x = x0
        xs, x0s, ts = [], [], []
        for i, t in enumerate(self.timesteps.flip(0).tolist()):  # ascending
            t_from = self.prev_timestep(t)
            a_from, a_t = self.alpha_bar_at(t_from), self.alphas_cumprod[t]
            model_output = eps_fn(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
            if model_output.shape != x.shape:
                raise ValueError(f"model output shape {tuple(model_output.shape)} must equal {tuple(x.shape)}")
            x0_pred, eps = self._to_eps_x0(model_output, x, a_from)
            x_next = a_t**0.5 * x0_pred + (1 - a_t) ** 0.5 * eps
            if return_trajectory:
                xs.append(x.detach().cpu())
                x0s.append(x0_pred.detach().cpu())
                ts.append(t)
            if callback is not None:
                replaced = callback(StepInfo(i, t_from, t, x, x_next, x0_pred, eps))
                x_next = x_next if replaced is None else replaced
            x = x_next
        if not return_trajectory:
            return x
        return x, Trajectory(ts, torch.stack(xs), torch.stack(x0s), x.detach().cpu())


def _check_config(config) -> None:
    if not isinstance(config, SchedulerConfig):
        raise TypeError(f"config must be a SchedulerConfig (course_lib.schedules), got {type(config).__name__}; "
                        f"a diffusers scheduler_config.json dict goes through SchedulerConfig.from_diffusers")


def make_sampler(config: SchedulerConfig, kind: str = "ddim", n_steps: int = 50,
                 eta: float = 0.0) -> DDIMSampler | DDPMSampler:
    """A fresh sampler of ``kind`` ("ddim" or "ddpm") for ``config``: what a pipeline makes for each call.

    ``eta`` is DDIM's (0: deterministic); DDPM is always ancestral, so it takes only eta = 0.
    """
    check_choice("sampler", kind, SAMPLERS)
    if kind == "ddpm":
        if check_number("eta", eta, 0.0) != 0:
            raise ValueError(f"eta={eta} applies to the DDIM sampler only (DDPM is always ancestral); "
                             f"use sampler='ddim' or eta=0")
        return DDPMSampler.from_config(config, n_steps)
    return DDIMSampler.from_config(config, n_steps, eta)


# ----------------------------------------------------------------------------- guidance

def guided_eps(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance, Ho & Salimans 2022 eq. 6: ε_u + w (ε_c - ε_u)."""
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


class ClassifierFreeGuidance:
    """Wrap a conditional ε-model ``model(x, t, cond) -> ε`` into ``eps_fn(x, t)`` with guidance.

    w = 1 is the plain conditional model (one forward); w = 0 the unconditional one;
    w > 1 pushes samples towards the condition. ``cond`` and ``uncond`` are batched
    along dim 0 (``uncond`` may have batch 1 and is repeated); both halves run in one
    forward of batch 2B.
    """

    def __init__(self, model: Callable, cond: torch.Tensor, uncond: torch.Tensor | None = None,
                 guidance_scale: float = 1.0):
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)):
            raise TypeError(f"guidance_scale must be a number, got {type(guidance_scale).__name__}")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0 (0: unconditional, 1: conditional), got {guidance_scale}")
        if guidance_scale != 1 and uncond is None:
            raise ValueError(f"guidance_scale={guidance_scale} needs an unconditional input (uncond); "
                             "pass uncond or use guidance_scale=1 for the plain conditional model")
        if uncond is not None and uncond.shape[1:] != cond.shape[1:]:
            raise ValueError(f"uncond shape {tuple(uncond.shape)} does not match cond shape {tuple(cond.shape)} "
                             "after the batch dimension")
        self.model, self.cond, self.uncond, self.guidance_scale = model, cond, uncond, float(guidance_scale)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if self.cond.shape[0] != b:
            raise ValueError(f"cond has batch {self.cond.shape[0]} but x has batch {b}")
        if self.guidance_scale == 1:
            return self.model(x, t, self.cond)
        uncond = self.uncond.expand(b, *self.uncond.shape[1:]) if self.uncond.shape[0] == 1 else self.uncond
        if uncond.shape[0] != b:
            raise ValueError(f"uncond has batch {self.uncond.shape[0]}; allowed: 1 or {b}")
        eps = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([uncond, self.cond]))  # [2B, ...]
        eps_uncond, eps_cond = eps.chunk(2)
        return guided_eps(eps_uncond, eps_cond, self.guidance_scale)


# ----------------------------------------------------------------------------- interpolation

def slerp(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation between two noise tensors (Shoemake 1985), per batch item.

    Gaussian noise lives near a sphere of radius √d; a straight line between two
    draws cuts inside it (its midpoint has norm ≈ √(d/2)), slerp stays on it.
    """
    if a.shape != b.shape:
        raise ValueError(f"slerp needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    fa, fb = a.flatten(1), b.flatten(1)  # [B, D]
    cos = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1))
    theta = torch.arccos(cos.clamp(-1, 1))[:, None]  # [B, 1]
    sin = torch.sin(theta)
    near = sin.abs() < 1e-6  # (anti)parallel: fall back to the straight line
    wa = torch.where(near, torch.full_like(theta, 1 - alpha), torch.sin((1 - alpha) * theta) / sin)
    wb = torch.where(near, torch.full_like(theta, alpha), torch.sin(alpha * theta) / sin)
    return (wa * fa + wb * fb).reshape(a.shape)
