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

``SchedulerConfig`` is what a trained model's ``scheduler_config.json`` says about
sampling it: the schedule, what the network predicts (ε or v) and where the
sampling steps fall (``timestep_spacing``). ``DDIMSampler.from_config`` /
``DDPMSampler.from_config`` (``course_lib.diffusion``) add the update rule.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch

from .checks import check_choice, check_int, check_number

__all__ = ["SCHEDULES", "make_betas", "alpha_bar", "snr", "log_snr", "SchedulerConfig", "TIMESTEP_SPACINGS",
           "PREDICTION_TYPES"]

TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")  # Lin et al. 2024, "Common Diffusion Noise Schedules
# and Sample Steps are Flawed", table 2
PREDICTION_TYPES = ("epsilon", "v_prediction")  # ε (Ho et al. 2020) or v (Salimans & Ho 2022)
_DIFFUSERS_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine"}

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


@dataclass(frozen=True)
class SchedulerConfig:
    """How a diffusion model is sampled: the fields of diffusers' ``scheduler_config.json`` that matter.

    The defaults are Stable Diffusion v1.5's (scaled-linear β from 0.00085 to 0.012,
    "leading" timesteps plus ``steps_offset=1``, the last DDIM step landing on ᾱ_0).

    num_train_timesteps   N, the length of the training chain
    beta_schedule         "linear", "scaled_linear" or "squaredcos_cap_v2" (the cosine schedule)
    beta_start, beta_end  the β range of the two linear schedules
    prediction_type       "epsilon" (SD 1.x, SD 2.x-base) or "v_prediction" (SD 2.x 768)
    timestep_spacing      "leading", "trailing" or "linspace": which n of the N timesteps are sampled
    steps_offset          added to "leading" timesteps (SD: 1)
    set_alpha_to_one      DDIM: the last step lands on ᾱ = 1 (True) or on ᾱ_0 (False, SD)
    clip_sample           clip x̂_0 to [-clip_sample_range, clip_sample_range] (pixel-space models)
    """

    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    prediction_type: str = "epsilon"
    timestep_spacing: str = "leading"
    steps_offset: int = 1
    set_alpha_to_one: bool = False
    clip_sample: bool = False
    clip_sample_range: float = 1.0

    def __post_init__(self):
        check_int("num_train_timesteps", self.num_train_timesteps, 1)
        check_choice("beta_schedule", self.beta_schedule, _DIFFUSERS_SCHEDULES)
        check_number("beta_start", self.beta_start, 0.0, 1.0, low_open=True)
        check_number("beta_end", self.beta_end, 0.0, 1.0, low_open=True)
        check_choice("prediction_type", self.prediction_type, PREDICTION_TYPES)
        check_choice("timestep_spacing", self.timestep_spacing, TIMESTEP_SPACINGS)
        check_int("steps_offset", self.steps_offset, 0)
        for name in ("set_alpha_to_one", "clip_sample"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        check_number("clip_sample_range", self.clip_sample_range, 0.0, low_open=True)

    @classmethod
    def sd15(cls) -> "SchedulerConfig":
        """Stable Diffusion v1.5's scheduler settings (the defaults)."""
        return cls()

    @classmethod
    def for_schedule(cls, kind: str, num_train_timesteps: int = 1000, **fields) -> "SchedulerConfig":
        """The config of a model trained on ``make_betas(kind, num_train_timesteps)`` (the course's
        names: "linear", "scaled_linear", "cosine", with their published β ranges); ``fields``
        set the rest (prediction_type, timestep_spacing …)."""
        check_choice("schedule kind", kind, SCHEDULES)
        name = {ours: theirs for theirs, ours in _DIFFUSERS_SCHEDULES.items()}[kind]
        start, end = SCHEDULES[kind] or (cls.beta_start, cls.beta_end)  # cosine: the range is unused
        return cls(num_train_timesteps=num_train_timesteps, beta_schedule=name, beta_start=start, beta_end=end,
                   **fields)

    def betas(self) -> torch.Tensor:
        """β_0 … β_{N-1} ``[N]`` (``make_betas``)."""
        kind = _DIFFUSERS_SCHEDULES[self.beta_schedule]
        if kind == "cosine":
            return make_betas("cosine", self.num_train_timesteps)
        return make_betas(kind, self.num_train_timesteps, self.beta_start, self.beta_end)

    # ---- diffusers' scheduler_config.json
    @classmethod
    def from_diffusers(cls, config: dict) -> "SchedulerConfig":
        """Read a diffusers scheduler config as diffusers' ``DDIMScheduler`` would.

        A field that is absent takes diffusers' default; a field that would change
        sampling in a way the course does not implement (``thresholding``,
        ``rescale_betas_zero_snr``, ``trained_betas``, ``prediction_type="sample"``,
        other spacings or variance types, another scheduler's knobs) raises
        ``ValueError`` naming the field and what is allowed. Only diffusers' bookkeeping
        (names starting with "_": ``_class_name``, ``_diffusers_version``,
        ``_use_default_values``...) and the fields in ``IGNORED_FIELDS``, which have no
        effect on DDIM/DDPM sampling, are ignored.
        """
        if not isinstance(config, dict):
            raise TypeError(f"a scheduler config must be a dict, got {type(config).__name__}")
        values = {**_DIFFUSERS_DEFAULTS}
        for key, value in config.items():
            if key.startswith("_") or key in IGNORED_FIELDS:
                continue
            if key in _INERT_VALUES:
                if value != _INERT_VALUES[key]:
                    raise ValueError(f"scheduler config field {key}={value!r} is not supported by the course's "
                                     f"samplers; allowed: {_INERT_VALUES[key]!r}")
                continue
            if key not in values:
                known = sorted(set(values) | set(_INERT_VALUES) | set(IGNORED_FIELDS)) + ["_* (bookkeeping)"]
                raise ValueError(f"scheduler config field {key!r} is not supported by the course's samplers; "
                                 f"known fields: {', '.join(known)}")
            values[key] = value
        return cls(**values)

    def to_diffusers(self) -> dict:
        """The keyword arguments of diffusers' ``DDIMScheduler``/``DDPMScheduler`` for this config."""
        return asdict(self)


# diffusers' DDIMScheduler defaults for the fields above (an absent field means these)
_DIFFUSERS_DEFAULTS = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.0001, beta_end=0.02,
                           prediction_type="epsilon", timestep_spacing="leading", steps_offset=0,
                           set_alpha_to_one=True, clip_sample=True, clip_sample_range=1.0)
assert set(_DIFFUSERS_DEFAULTS) == {f.name for f in fields(SchedulerConfig)}
# fields that are fine only at the value that leaves DDIM/DDPM sampling as the course implements it
_INERT_VALUES = dict(thresholding=False, rescale_betas_zero_snr=False, trained_betas=None,
                     variance_type="fixed_small")
# fields that never change DDIM/DDPM sampling: PNDM's Runge-Kutta switch, and the two thresholding
# parameters, which act only with thresholding=True (refused above)
IGNORED_FIELDS = ("skip_prk_steps", "dynamic_thresholding_ratio", "sample_max_value")
