"""digits-ddpm: a class-conditional diffusion model of scikit-learn's handwritten digits.

The denoiser is Stable Diffusion's UNet (``course_lib.unet``) at toy size, run on
the digits at their native 8×8 pixels in [-1, 1]. The label enters the way a
prompt does in Stable Diffusion: as a token the cross-attention layers read,
here a single learned embedding per digit (``cond [B, 1, D]``). An eleventh
embedding is the "no label" token ∅; during training 15% of the labels are
replaced by it, so one network learns both ε(x_t, t, y) and ε(x_t, t, ∅), which
is what classifier-free guidance needs (Ho & Salimans 2022, Algorithm 1).

Training is the simple DDPM loss (Ho et al. 2020, Algorithm 1) in the course's
one training loop (``course_lib.train.train``: AdamW, warmup + cosine learning
rate, an exponential moving average (EMA) of the weights, which is what gets
sampled). ``load()`` follows the zoo contract (``course_lib.zoo``): it trains
deterministically on first use and caches the EMA weights, the loss history and
the training time atomically under a name keyed by the config, data and recipe.

    model = zoo.load("digits-ddpm")                  # DigitsDiffusion
    images = model.sample(torch.arange(10), guidance_scale=3.0, n_steps=50)   # [10, 1, 8, 8] in [-1, 1]
    model.unet, model.betas, model.loss_history, model.train_seconds

``digit_classifier()`` fits an SVM on the real digits: the judge of generated samples.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch
from torch import nn

from ..data.images import load_digits_tensor
from ..device import randn, seeded
from ..diffusion import ClassifierFreeGuidance, DDIMSampler, DDPMSampler, alpha_bar, diffusion_loss, make_betas
from ..train import train as train_loop
from ..unet import UNetConfig, UNetModel
from .cache import cache_path, fingerprint
from .common import load_cached, load_or_train, make_config, training_device

RECIPE = 3  # version of the training code; part of the cache key (raise it when training changes)
SECONDS_PER_STEP = 0.1  # training on a 2-core CPU (500 steps: 49 s), for the line printed before training

__all__ = ["DigitsDDPMConfig", "LabelConditionedUNet", "DigitsDiffusion", "load", "train",
           "digit_classifier", "classify", "NULL_LABEL"]

NULL_LABEL = 10  # the "no label" token ∅ used for classifier-free guidance


@dataclass(frozen=True)
class DigitsDDPMConfig:
    """Everything that determines the trained weights (hashed into the cache key)."""

    image_size: int = 8  # the digits' native resolution
    block_out_channels: tuple[int, ...] = (16, 32)
    cross_attention_levels: tuple[bool, ...] = (False, True)
    layers_per_block: int = 1
    cond_dim: int = 32  # width of the label token
    num_heads: int = 2
    norm_num_groups: int = 8
    schedule: str = "cosine"  # keeps more of the chain at useful noise levels on tiny images
    num_train_timesteps: int = 1000
    steps: int = 500
    batch_size: int = 128
    lr: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.0
    label_dropout: float = 0.15
    ema_decay: float = 0.99
    seed: int = 0

    def unet_config(self) -> UNetConfig:
        return UNetConfig(in_channels=1, out_channels=1, block_out_channels=self.block_out_channels,
                          layers_per_block=self.layers_per_block, cross_attention_levels=self.cross_attention_levels,
                          cross_attention_dim=self.cond_dim, num_heads=self.num_heads,
                          norm_num_groups=self.norm_num_groups)


class LabelConditionedUNet(nn.Module):
    """ε_θ(x_t, t, y): a label y ∈ {0..9, ∅=10} becomes one cross-attention token for the UNet."""

    def __init__(self, config: DigitsDDPMConfig):
        super().__init__()
        self.label_embedding = nn.Embedding(11, config.cond_dim)  # 10 digits + ∅
        self.unet = UNetModel(config.unet_config())

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cond = self.label_embedding(labels)[:, None, :]  # [B, 1, D]
        return self.unet(x, t, cond)  # [B, 1, H, W]


def _check_labels(labels) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.is_floating_point() or labels.numel() == 0:
        raise ValueError(f"labels must be a non-empty 1-D integer tensor or list, got shape {tuple(labels.shape)} "
                         f"and dtype {labels.dtype}")
    if bool(((labels < 0) | (labels > 9)).any()):
        raise ValueError(f"labels must be digits 0-9, got {sorted(set(labels.tolist()))}")
    return labels.long()


class DigitsDiffusion:
    """The trained model: its EMA denoiser, the schedule, and samplers with guidance."""

    def __init__(self, model: LabelConditionedUNet, config: DigitsDDPMConfig, loss_history: list[float],
                 train_seconds: float):
        self.model, self.config = model.eval(), config
        self.unet = model.unet
        self.betas = make_betas(config.schedule, config.num_train_timesteps)
        self.loss_history, self.train_seconds = loss_history, train_seconds

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def eps_fn(self, labels, guidance_scale: float = 3.0):
        """``eps_fn(x, t)`` for the samplers: ε_∅ + w (ε_y - ε_∅) for the given labels."""
        labels = _check_labels(labels).to(self.device)
        null = torch.full((1,), NULL_LABEL, dtype=torch.long, device=self.device)
        return ClassifierFreeGuidance(self.model, labels, null, guidance_scale)

    def ddim(self, n_steps: int = 50, eta: float = 0.0) -> DDIMSampler:
        """A DDIM sampler on this model's schedule.

        x̂₀ is clipped to the data range [-1, 1] and ε̂ re-derived from the clipped x̂₀, so the
        two stay consistent; with guidance, unclipped or inconsistent steps drift to saturated
        images as the number of steps grows.
        """
        return DDIMSampler(self.betas, n_steps, eta=eta, clip_sample=True, use_clipped_model_output=True)

    def ddpm(self, n_steps: int | None = None) -> DDPMSampler:
        """An ancestral DDPM sampler (all 1000 steps by default)."""
        return DDPMSampler(self.betas, n_steps, clip_sample=True)

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """x_T ~ N(0, I) ``[n, 1, H, W]`` (drawn on the generator's device, then moved)."""
        s = self.config.image_size
        return randn((n, 1, s, s), generator=generator, device=self.device)

    @torch.no_grad()
    def sample(self, labels, guidance_scale: float = 3.0, n_steps: int = 50, generator: torch.Generator | None = None,
               eta: float = 0.0, x_T: torch.Tensor | None = None, callback=None, return_trajectory: bool = False):
        """Images of the requested digits, ``[N, 1, H, W]`` in [-1, 1], by DDIM with guidance w."""
        labels = _check_labels(labels)
        x_T = self.noise(len(labels), generator) if x_T is None else x_T.to(self.device)
        if x_T.shape[0] != len(labels):
            raise ValueError(f"x_T has batch {x_T.shape[0]} but {len(labels)} labels were given")
        out = self.ddim(n_steps, eta).sample(self.eps_fn(labels, guidance_scale), x_T, generator=generator,
                                             callback=callback, return_trajectory=return_trajectory)
        if return_trajectory:
            return out[0].clamp(-1, 1), out[1]
        return out.clamp(-1, 1)  # x̂₀ is clipped each step; the last step can overshoot by ~1e-3


def train(config: DigitsDDPMConfig, device: torch.device | None = None,
          progress: bool = True) -> tuple[LabelConditionedUNet, list[float], float]:
    """Train from scratch with ``course_lib.train.train``: returns (EMA model, loss per step, seconds).

    Deterministic given the config; the global random state is left as it was.
    """
    device = training_device(device)
    images, labels = load_digits_tensor(config.image_size)  # [1797, 1, 8, 8], [1797]
    alphas_cumprod = alpha_bar(make_betas(config.schedule, config.num_train_timesteps))
    g = torch.Generator().manual_seed(config.seed)  # batches, label dropout, timesteps, noise

    def batch(step):
        idx = torch.randint(0, len(images), (config.batch_size,), generator=g)
        x0, y = images[idx], labels[idx].clone()
        y[torch.rand(config.batch_size, generator=g) < config.label_dropout] = NULL_LABEL  # learn ε(x, t, ∅) too
        t = torch.randint(0, config.num_train_timesteps, (config.batch_size,), generator=g)
        return x0, y, t, randn(x0.shape, generator=g)

    def loss_fn(model, b):
        x0, y, t, noise = b
        return diffusion_loss(lambda x_t, tt: model(x_t, tt, y), x0, alphas_cumprod, t=t, noise=noise)

    with seeded(config.seed):  # parameter initialisation
        model = LabelConditionedUNet(config)
    start = time.perf_counter()
    history = train_loop(model, loss_fn, batch, config.steps, lr=config.lr, device=device,
                         weight_decay=config.weight_decay, betas=(0.9, 0.999), warmup_steps=config.warmup_steps,
                         grad_clip=None, seed=config.seed, ema_decay=config.ema_decay, progress=progress,
                         desc="digits-ddpm")
    return model.eval(), history["train_loss"], time.perf_counter() - start


def load(config: DigitsDDPMConfig | dict | None = None, *, device=None, retrain: bool = False,
         progress: bool = True, **overrides) -> DigitsDiffusion:
    """The trained digits model (``zoo.load("digits-ddpm")``), trained and cached on first use.

    ``overrides`` replace config fields, e.g. ``load(steps=20)`` for a quick test; see
    ``course_lib.zoo`` for ``device``, ``retrain`` and ``progress``.
    """
    config = make_config(DigitsDDPMConfig, config, overrides, "digits-ddpm")
    device = training_device(device)
    path = cache_path("digits-ddpm", config, recipe=RECIPE, data=fingerprint(*load_digits_tensor(config.image_size)))

    def fit():
        model, history, seconds = train(config, device, progress)
        return model.state_dict(), {"loss_history": history, "train_seconds": seconds,
                                    "config": dataclasses.asdict(config)}

    tensors, meta = load_or_train("digits-ddpm", path, fit, seed=config.seed, retrain=retrain, progress=progress,
                                  estimate_s=SECONDS_PER_STEP * config.steps)
    with torch.device("meta"):
        model = LabelConditionedUNet(config)
    load_cached(model, tensors, path, "digits-ddpm")
    return DigitsDiffusion(model.to(device), config, meta["loss_history"], meta["train_seconds"])


# ----------------------------------------------------------------------------- the judge

def digit_classifier(image_size: int = 8, train_fraction: float = 1.0, seed: int = 0):
    """An RBF SVM fitted on the real digits (at ``image_size``): the judge of generated digits.

    ``train_fraction < 1`` holds out the rest; returns ``(svm, held-out accuracy or None)``.
    """
    from sklearn.svm import SVC

    images, labels = load_digits_tensor(image_size)
    x, y = images.flatten(1).numpy(), labels.numpy()
    if not 0 < train_fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed)).numpy()
    n_train = int(round(train_fraction * len(y)))
    train_idx, test_idx = perm[:n_train], perm[n_train:]
    svm = SVC(C=10.0, gamma="scale").fit(x[train_idx], y[train_idx])
    acc = float((svm.predict(x[test_idx]) == y[test_idx]).mean()) if len(test_idx) else None
    return svm, acc


def classify(svm, images: torch.Tensor) -> torch.Tensor:
    """The SVM's digit for each image ``[N, 1, H, W]`` in [-1, 1] -> ``[N]``."""
    return torch.as_tensor(svm.predict(images.detach().float().cpu().flatten(1).numpy()))
