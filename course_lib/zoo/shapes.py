"""Zoo: a tiny Stable Diffusion trained offline on captioned shapes (``course_lib.data.make_shapes``).

Two models, each of the real architecture at a CPU-sized scale, trained
deterministically on first use and cached (keyed by config, data and recipe):

* ``"shapes-vae"`` — ``load_vae()``: the SD autoencoder (``course_lib.autoencoder``),
  32×32 images → 4×8×8 latents (two halvings), trained on reconstruction plus a
  small KL term (Rombach et al. 2022, sec. 3.1). Its ``scaling_factor`` is measured
  on the training latents (1 / their standard deviation), the way SD's 0.18215 was.
  Then the decoder alone trains on a second stage (``train_decoder_on_noisy_latents``):
  it learns to draw the clean picture from latents pushed off the encoder's by
  Gaussian noise, because the latents a diffusion model samples are never exactly
  the encoder's.
* ``"shapes-ldm"`` — ``load_ldm()``: a CLIP-architecture text encoder
  (``course_lib.clip``) and the SD UNet (``course_lib.unet``) trained *jointly* with
  the ε-prediction loss on the VAE's latents (Ho et al. 2020, eq. 14) — the posterior
  means, so the UNet spends nothing on modelling the encoder's noise. The captions
  are written afresh every step from the labels (``training_captions``): colour and
  kind always, the size word and the position phrase each with probability
  ``p_size`` / ``p_position``, so a model learns every attribute alone and together;
  ``cond_dropout`` of them are replaced by the empty prompt, so that one network is
  both conditional and unconditional (classifier-free guidance, Ho & Salimans 2022,
  sec. 3.2). At low noise (t < ``low_noise_t``), where the picture already shows its
  colour and kind, more are empty and most are *another image's* caption: the network
  learns to believe the picture there, so guidance does not pinch a shape that is
  already drawn and image-to-image at low strength keeps its picture. The loss weights
  each timestep by min(SNR, γ)/SNR (min-SNR weighting, Hang et al. 2023), which keeps
  the many easy low-noise steps from dominating.

Both train with ``course_lib.train.train`` (AdamW, warm-up + cosine, EMA) on
``course_lib.device.get_device()`` unless told otherwise; every random draw of
training (batches, posterior samples, caption variants, timesteps, noise) comes from
the batch function's own ``torch.Generator``.

    ldm = zoo.load("shapes-ldm")                   # ShapesLDM (a LatentDiffusion)
    images = ldm.sample(["a big red circle on the left"], guidance_scale=5.0, n_steps=50)  # [1, 3, 32, 32]
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..autoencoder import Autoencoder, AutoencoderConfig
from ..checks import check_choice, check_int, check_number
from ..clip import CLIPTextConfig, CLIPTextEncoder, WordTokenizer
from ..data.shapes import (SHAPE_COLORS, SHAPE_KINDS, SHAPE_POSITIONS, SHAPE_SIZES, make_shapes,
                           shape_caption)
from ..device import randn, seeded
from ..diffusion import SCHEDULES, SchedulerConfig, alpha_bar, diffusion_loss, make_betas
from ..latent_diffusion import LatentDiffusion
from ..train import train
from ..unet import UNetConfig, UNetModel
from .cache import cache_path, fingerprint
from .common import load_cached, load_or_train, make_config, training_device

# Versions of the training code below, one per model. Raise one whenever a change to the
# code changes that model's trained weights: it is part of the cache key, so stale
# checkpoints are not loaded.
VAE_RECIPE = 5  # 5: the decoder's second stage on noisy latents
LDM_RECIPE = 5  # 5: noisy captions at low noise (``training_captions``), latents = posterior means
VAE_SECONDS_PER_STEP = 0.2  # on a 2-core CPU, for the line printed before training
DECODER_SECONDS_PER_STEP = 0.07
LDM_SECONDS_PER_STEP = 0.12

__all__ = ["ShapesVAEConfig", "ShapesLDMConfig", "ShapesLDM", "TextConditionedUNet", "load_vae", "load_ldm",
           "train_vae", "train_decoder_on_noisy_latents", "train_ldm", "training_captions", "shapes_tokenizer"]


def shapes_tokenizer(max_length: int = 10) -> WordTokenizer:
    """The tokenizer of the offline shapes model: every word its captions can use."""
    words = ["a"] + list(SHAPE_SIZES) + list(SHAPE_COLORS) + list(SHAPE_KINDS)
    words += [w for phrase in SHAPE_POSITIONS for w in phrase.split()]
    return WordTokenizer(words, max_length=max_length)


RECONSTRUCTION_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


@dataclass
class ShapesVAEConfig:
    image_size: int = 32
    block_out_channels: tuple = (16, 32, 32)  # three levels: 32×32 → 8×8 latents (factor 4)
    latent_channels: int = 4
    layers_per_block: int = 1
    norm_num_groups: int = 8
    n_images: int = 4096
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 50
    loss: str = "mse"  # per-pixel reconstruction loss: "mse" or "l1" (SD's autoencoder: L1 + perceptual + GAN)
    kl_weight: float = 1e-4  # per latent element, relative to the per-pixel reconstruction loss
    decoder_steps: int = 1200  # second stage: the decoder alone, on noisy latents (0: none) ...
    decoder_noise: float = 0.35  # ... z = mean + σ·ε, σ in units of the scaled (unit-variance) latents
    decoder_lr: float = 5e-4
    seed: int = 0

    def __post_init__(self):
        check_choice("loss", self.loss, RECONSTRUCTION_LOSSES)
        check_int("decoder_steps", self.decoder_steps, 0)
        check_number("decoder_noise", self.decoder_noise, 0.0)

    def autoencoder_config(self, scaling_factor: float = 1.0) -> AutoencoderConfig:
        return AutoencoderConfig(latent_channels=self.latent_channels, block_out_channels=self.block_out_channels,
                                 layers_per_block=self.layers_per_block, norm_num_groups=self.norm_num_groups,
                                 scaling_factor=scaling_factor)


@dataclass
class ShapesLDMConfig:
    vae: ShapesVAEConfig = field(default_factory=ShapesVAEConfig)
    unet_channels: tuple = (32, 64)
    unet_attention: tuple = (False, True)  # cross-attention only at the coarse (4×4) level
    unet_heads: int = 4
    unet_layers_per_block: int = 1
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    max_length: int = 10
    n_images: int = 8192
    steps: int = 2700
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 50
    p_size: float = 0.8  # how often a training caption names the size ...
    p_position: float = 0.8  # ... and the position
    cond_dropout: float = 0.1  # fraction of captions replaced by "" (for guidance)
    low_noise_t: int = 500  # below this timestep ...
    low_noise_dropout: float = 0.2  # ... this fraction of captions is replaced by "" instead
    low_noise_shuffle: float = 0.6  # ... and this fraction by another image's caption (training_captions)
    ema_decay: float = 0.995
    sample_posterior: bool = False  # train on posterior samples z ~ q(z|x) (SD's way) or on their means
    min_snr_gamma: float = 5.0  # weight timesteps by min(SNR, γ) / SNR (Hang et al. 2023; diffusion_loss); 0 = plain ε-MSE
    schedule: str = "scaled_linear"  # the β schedule of training and sampling (SD v1's; course_lib.diffusion)
    seed: int = 1

    def __post_init__(self):
        check_choice("schedule", self.schedule, SCHEDULES)
        for name in ("p_size", "p_position", "cond_dropout", "low_noise_dropout", "low_noise_shuffle"):
            check_number(name, getattr(self, name), 0.0, 1.0)
        if self.low_noise_dropout + self.low_noise_shuffle > 1:
            raise ValueError(f"low_noise_dropout + low_noise_shuffle must be at most 1 (they are fractions of the "
                             f"same captions), got {self.low_noise_dropout} + {self.low_noise_shuffle}")

    def unet_config(self) -> UNetConfig:
        return UNetConfig.small(block_out_channels=self.unet_channels, cross_attention_levels=self.unet_attention,
                                layers_per_block=self.unet_layers_per_block, cross_attention_dim=self.text_width,
                                num_heads=self.unet_heads, norm_num_groups=16)

    def text_config(self, vocab_size: int) -> CLIPTextConfig:
        return CLIPTextConfig(vocab_size=vocab_size, width=self.text_width, n_layers=self.text_layers,
                              n_heads=self.text_heads, n_positions=self.max_length, mlp_width=4 * self.text_width)


def _data_key(seed: int, size: int) -> str:
    """Fingerprint of the generator's first images: a change to ``make_shapes`` changes the cache key."""
    return fingerprint(*make_shapes(4, seed=seed, size=size))


def _encode(vae: Autoencoder, images: torch.Tensor, device, batch: int = 256):
    """Posterior means and standard deviations of ``images`` [N, 3, H, W] -> two [N, C, h, w] on the CPU."""
    vae = vae.to(device).eval()
    with torch.no_grad():
        dists = [vae.encode(images[i:i + batch].to(device)) for i in range(0, len(images), batch)]
    return torch.cat([d.mean for d in dists]).cpu(), torch.cat([d.std for d in dists]).cpu()


# ------------------------------------------------------------------------------ the autoencoder

def train_vae(config: ShapesVAEConfig, device=None, progress: bool = True) -> tuple[Autoencoder, list[float]]:
    """Train the shapes autoencoder; returns ``(model, per-step loss)``. Deterministic given the seed."""
    device = training_device(device)
    images, _ = make_shapes(config.n_images, seed=config.seed, size=config.image_size)  # [N, 3, H, W]
    with seeded(config.seed):  # parameter initialisation
        model = Autoencoder(config.autoencoder_config())
    factor = model.config.downsample_factor
    latent_shape = (config.latent_channels, config.image_size // factor, config.image_size // factor)
    g = torch.Generator().manual_seed(config.seed)  # batches and posterior samples

    def batch(step):
        idx = torch.randint(0, config.n_images, (config.batch_size,), generator=g)
        return images[idx], randn((config.batch_size, *latent_shape), generator=g)

    def loss_fn(model, b):
        x, eps = b  # [B, 3, H, W], [B, C, h, w]
        dist = model.encode(x)
        x_hat = model.decode(dist.mean + dist.std * eps)  # the reparameterisation trick
        kl = dist.kl().mean() / eps[0].numel()  # per latent element
        return RECONSTRUCTION_LOSSES[config.loss](x_hat, x) + config.kl_weight * kl

    history = train(model, loss_fn, batch, config.steps, lr=config.lr, device=device, weight_decay=0.0,
                    betas=(0.9, 0.999), warmup_steps=min(config.warmup_steps, config.steps), grad_clip=None,
                    seed=config.seed, progress=progress, desc="shapes-vae")
    model.eval()
    mean, _ = _encode(model, images[:1024], device)  # SD's recipe: latents scaled to unit variance
    model.config.scaling_factor = float(1.0 / mean.std())
    if config.decoder_steps:
        train_decoder_on_noisy_latents(model, images, config, device, progress)
    return model, history["train_loss"]


def train_decoder_on_noisy_latents(model: Autoencoder, images: torch.Tensor, config: ShapesVAEConfig,
                                   device=None, progress: bool = True) -> list[float]:
    """Second stage: the decoder learns D(μ(x) + σ·ε) ≈ x with the encoder frozen; returns the losses.

    A diffusion model's samples land *near* the encoder's latents, never on them, and a
    decoder trained only on the posterior (whose spread the KL term keeps small) turns a
    small error there into a visible one: sides bowed inwards, lumpy outlines. Trained
    on latents with noise σ = ``decoder_noise`` (in the unit-variance units the LDM
    works in), it maps the whole neighbourhood of a picture's latent to that picture.
    The encoder, its latents and ``scaling_factor`` stay as they were, so the LDM
    trains on the same latents. Measured in ``benchmarks/quality.py`` (README,
    *Benchmarks*): far fewer text-to-image samples with bowed-in sides (36 → 4 of 240),
    and sharper reconstructions.
    """
    device = training_device(device)
    mean, _ = _encode(model, images, device)  # [N, C, h, w] the encoder's latents, fixed from here on
    sigma = config.decoder_noise / model.config.scaling_factor  # in the encoder's own units
    g = torch.Generator().manual_seed(config.seed + 1)

    def batch(step):
        idx = torch.randint(0, len(images), (config.batch_size,), generator=g)
        z = mean[idx]  # [B, C, h, w]
        return z + sigma * randn(z.shape, generator=g), images[idx]

    def loss_fn(model, b):
        z, x = b  # [B, C, h, w], [B, 3, H, W]
        return RECONSTRUCTION_LOSSES[config.loss](model.decode(z), x)

    frozen = [p for name, p in model.named_parameters() if not name.startswith(("decoder.", "post_quant_conv."))]
    for p in frozen:
        p.requires_grad_(False)
    try:
        history = train(model, loss_fn, batch, config.decoder_steps, lr=config.decoder_lr, device=device,
                        weight_decay=0.0, betas=(0.9, 0.999), grad_clip=None, seed=config.seed + 1,
                        progress=progress, desc="shapes-vae decoder")
    finally:
        for p in frozen:
            p.requires_grad_(True)
    model.eval()
    return history["train_loss"]


def load_vae(config: ShapesVAEConfig | dict | None = None, *, device=None, retrain: bool = False,
             progress: bool = True, **overrides) -> Autoencoder:
    """The trained shapes autoencoder (``zoo.load("shapes-vae")``): trained and cached on first use.

    ``overrides`` replace fields of ``ShapesVAEConfig`` (e.g. ``steps=20``); see
    ``course_lib.zoo`` for ``device``, ``retrain`` and ``progress``.
    """
    config = make_config(ShapesVAEConfig, config, overrides, "shapes-vae")
    device = training_device(device)
    path = cache_path("shapes-vae", config, data=_data_key(config.seed, config.image_size), recipe=VAE_RECIPE)

    def fit():
        start = time.perf_counter()
        model, history = train_vae(config, device, progress)
        return model.state_dict(), {"scaling_factor": model.config.scaling_factor, "history": history,
                                    "config": dataclasses.asdict(config),
                                    "train_seconds": round(time.perf_counter() - start, 1)}

    tensors, meta = load_or_train("shapes-vae", path, fit, seed=config.seed, retrain=retrain, progress=progress,
                                  estimate_s=VAE_SECONDS_PER_STEP * config.steps
                                  + DECODER_SECONDS_PER_STEP * config.decoder_steps)
    with torch.device("meta"):  # no initialisation (and no global random draws): the weights come next
        model = Autoencoder(config.autoencoder_config(meta["scaling_factor"]))
    load_cached(model, tensors, path, "shapes-vae")
    model.history, model.train_seconds = meta["history"], meta["train_seconds"]
    return model.to(device).eval()


# ------------------------------------------------------------------------------ the latent diffusion model

class TextConditionedUNet(nn.Module):
    """The two networks that train together: ε(z_t, t, ids) = UNet(z_t, t, CLIP(ids))."""

    def __init__(self, text_encoder: CLIPTextEncoder, unet: UNetModel):
        super().__init__()
        self.text_encoder, self.unet = text_encoder, unet

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.unet(z_t, t, self.text_encoder(ids))  # [B, C, h, w]


class ShapesLDM(LatentDiffusion):
    """``LatentDiffusion`` for 32×32 shapes, plus ``sample`` (the zoo API) and the training record."""

    history: list[float] = []
    train_seconds: float | None = None  # wall-clock training time (None: unknown)

    @torch.no_grad()
    def sample(self, prompts, guidance_scale: float = 5.0, n_steps: int = 50,
               generator: torch.Generator | None = None, eta: float = 0.0) -> torch.Tensor:
        """Images ``[N, 3, 32, 32]`` in [-1, 1] for the prompts (DDIM, classifier-free guidance)."""
        images = self.text_to_image(prompts, guidance_scale=guidance_scale, n_steps=n_steps, eta=eta,
                                    generator=generator)
        return images.clamp(-1, 1)


def _caption_variants(labels: dict, tokenizer: WordTokenizer) -> torch.Tensor:
    """Token ids of every caption an image may get: [N, 4, L] (variant = 2·says_size + says_position)."""
    variants = []
    for c, k, big, p in zip(labels["color"].tolist(), labels["kind"].tolist(), labels["big"].tolist(),
                            labels["position"].tolist()):
        size, position = SHAPE_SIZES[int(big)], SHAPE_POSITIONS[p]
        variants += [shape_caption(SHAPE_COLORS[c], SHAPE_KINDS[k], size if s else None, position if q else None)
                     for s in (False, True) for q in (False, True)]
    return tokenizer(variants).view(len(labels["color"]), 4, -1)


def training_captions(ids_all: torch.Tensor, idx: torch.Tensor, t: torch.Tensor, empty: torch.Tensor,
                      config: ShapesLDMConfig, g: torch.Generator) -> torch.Tensor:
    """Token ids [B, L] of the captions for images ``idx`` [B] noised to timesteps ``t`` [B].

    ids_all: [N, 4, L], every caption of every image (``_caption_variants``); empty: [L].
    Each caption names colour and kind, and the size / position with probability
    ``p_size`` / ``p_position``. Then one uniform draw u per image decides:

    * u < p_drop → the empty prompt, so that the network also learns ε(z_t, t, ∅)
      for guidance (p_drop = ``cond_dropout``, or ``low_noise_dropout`` when
      t < ``low_noise_t``);
    * t < ``low_noise_t`` and the next ``low_noise_shuffle`` of u → the caption of
      another, random image: *noisy captions*. Where the picture already shows its
      colour and kind, the network learns to believe the picture rather than the
      words, so its conditional and unconditional predictions agree there: guidance
      has no difference left to exaggerate (no pinched sides on a square that is
      already drawn), and image-to-image at low strength keeps what the image shows,
      as SDEdit should (Meng et al. 2022) — web captions are noisy in the same way.
    """
    b = len(idx)
    says_size = torch.rand(b, generator=g) < config.p_size
    says_position = torch.rand(b, generator=g) < config.p_position
    variant = 2 * says_size.long() + says_position.long()  # [B] which of the four captions
    low = t < config.low_noise_t  # [B]
    p_drop = torch.where(low, config.low_noise_dropout, config.cond_dropout)  # [B]
    u = torch.rand(b, generator=g)
    other = torch.randint(0, len(ids_all), (b,), generator=g)  # whose caption a shuffled one gets
    shuffled = low & (u >= p_drop) & (u < p_drop + config.low_noise_shuffle)
    ids = ids_all[torch.where(shuffled, other, idx), variant]  # [B, L]
    ids[u < p_drop] = empty
    return ids


def train_ldm(config: ShapesLDMConfig, vae: Autoencoder, device=None, progress: bool = True) -> ShapesLDM:
    """Train the text encoder and UNet jointly on the VAE's latents (ε-prediction, DDPM eq. 14)."""
    device = training_device(device)
    tokenizer = shapes_tokenizer(config.max_length)
    images, _, labels = make_shapes(config.n_images, seed=config.seed, size=config.vae.image_size,
                                    return_labels=True)
    mean, std = _encode(vae, images, device)  # [N, C, h, w]: a fresh posterior sample is drawn every step
    scale = vae.config.scaling_factor
    ids_all = _caption_variants(labels, tokenizer)  # [N, 4, L]
    empty = tokenizer([""])[0]  # [L] the unconditional prompt
    alphas_cumprod = alpha_bar(make_betas(config.schedule, 1000))  # ᾱ_t [1000]
    g = torch.Generator().manual_seed(config.seed)

    def batch(step):
        b = config.batch_size
        idx = torch.randint(0, config.n_images, (b,), generator=g)
        z0 = mean[idx]  # [B, C, h, w]
        if config.sample_posterior:
            z0 = z0 + std[idx] * randn(z0.shape, generator=g)
        t = torch.randint(0, len(alphas_cumprod), (b,), generator=g)
        ids = training_captions(ids_all, idx, t, empty, config, g)  # [B, L]
        return z0 * scale, ids, t, randn(z0.shape, generator=g)

    def loss_fn(model, b):
        z0, ids, t, noise = b
        return diffusion_loss(lambda z_t, tt: model(z_t, tt, ids), z0, alphas_cumprod.to(z0.device), t=t,
                              noise=noise, min_snr_gamma=config.min_snr_gamma or None)

    with seeded(config.seed):  # parameter initialisation
        model = TextConditionedUNet(CLIPTextEncoder(config.text_config(tokenizer.vocab_size)),
                                    UNetModel(config.unet_config()))
    # On small latents the written-out attention trains faster on a CPU than the fused
    # SDPA kernel, whose backward pass is built for long sequences; same numbers.
    model.unet.set_attention_backend("naive")
    history = train(model, loss_fn, batch, config.steps, lr=config.lr, device=device, weight_decay=0.0,
                    betas=(0.9, 0.999), warmup_steps=min(config.warmup_steps, config.steps), grad_clip=None,
                    seed=config.seed, ema_decay=config.ema_decay, progress=progress, desc="shapes-ldm")
    model.unet.set_attention_backend("sdpa")
    ldm = _pipeline(vae, model, tokenizer, config)
    ldm.history = history["train_loss"]
    return ldm


def _pipeline(vae: Autoencoder, model: TextConditionedUNet, tokenizer: WordTokenizer,
              config: ShapesLDMConfig) -> "ShapesLDM":
    """The components as a ``ShapesLDM``, sampling with the schedule they were trained on."""
    return ShapesLDM(vae, model.unet, model.text_encoder, tokenizer, SchedulerConfig.for_schedule(config.schedule),
                     image_size=config.vae.image_size)


def load_ldm(config: ShapesLDMConfig | dict | None = None, *, device=None, retrain: bool = False,
             progress: bool = True, **overrides) -> ShapesLDM:
    """The trained shapes latent diffusion model (``zoo.load("shapes-ldm")``), trained and cached on first use.

    ``overrides`` replace fields of ``ShapesLDMConfig`` (``vae=dict(steps=20)`` changes
    fields of the autoencoder's config); the autoencoder comes from ``load_vae``.
    """
    config = make_config(ShapesLDMConfig, config, overrides, "shapes-ldm")
    device = training_device(device)
    vae = load_vae(config.vae, device=device, progress=progress)
    path = cache_path("shapes-ldm", config, data=_data_key(config.seed, config.vae.image_size), recipe=LDM_RECIPE)

    def fit():
        start = time.perf_counter()
        ldm = train_ldm(config, vae, device, progress)
        state = TextConditionedUNet(ldm.text_encoder, ldm.unet).state_dict()
        return state, {"tokenizer": ldm.tokenizer.to_dict(), "history": ldm.history,
                       "config": dataclasses.asdict(config), "train_seconds": round(time.perf_counter() - start, 1)}

    tensors, meta = load_or_train("shapes-ldm", path, fit, seed=config.seed, retrain=retrain, progress=progress,
                                  estimate_s=LDM_SECONDS_PER_STEP * config.steps)
    tokenizer = WordTokenizer.from_dict(meta["tokenizer"])
    with torch.device("meta"):
        model = TextConditionedUNet(CLIPTextEncoder(config.text_config(tokenizer.vocab_size)),
                                    UNetModel(config.unet_config()))
    load_cached(model, tensors, path, "shapes-ldm")
    ldm = _pipeline(vae, model.to(device), tokenizer, config)
    ldm.history, ldm.train_seconds = meta["history"], meta["train_seconds"]
    return ldm
