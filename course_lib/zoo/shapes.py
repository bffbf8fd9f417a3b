"""Zoo: a tiny Stable Diffusion trained offline on captioned shapes (``course_lib.data.make_shapes``).

Two models, each of the real architecture at a CPU-sized scale, trained
deterministically on first use and cached (keyed by their configs):

* ``"shapes-vae"`` — ``load_vae()``: the SD autoencoder (``course_lib.autoencoder``),
  32×32 images → 4×8×8 latents (two halvings), trained on reconstruction plus a
  small KL term (Rombach et al. 2022, sec. 3.1). Its ``scaling_factor`` is measured
  on the training latents (1 / their standard deviation), the way SD's 0.18215 was.
* ``"shapes-ldm"`` — ``load_ldm()``: a CLIP-architecture text encoder
  (``course_lib.clip``) and the SD UNet (``course_lib.unet``) trained *jointly* with
  the ε-prediction loss on the VAE's latents; 10% of captions are replaced by the
  empty prompt so that one network is both conditional and unconditional
  (classifier-free guidance, Ho & Salimans 2022, sec. 3.2).

``load("shapes-ldm").sample(prompts, guidance_scale=5.0, n_steps=50, generator=None)``
returns images ``[N, 3, 32, 32]`` in [-1, 1]; the object is a full
``LatentDiffusion`` (text-to-image, image-to-image, inpainting, attention maps).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..autoencoder import Autoencoder, AutoencoderConfig
from ..checkpoint import load_strict
from ..clip import CLIPTextConfig, CLIPTextEncoder, WordTokenizer
from ..data.shapes import SHAPE_COLORS, SHAPE_KINDS, SHAPE_POSITIONS, SHAPE_SIZES, make_shapes
from ..diffusion import make_betas, q_sample
from ..latent_diffusion import LatentDiffusion
from ..train import ema_update, lr_at
from ..unet import UNetConfig, UNetModel
from .cache import cache_path, fingerprint, load_tensors, save_tensors

# Version of the training code below. Raise it whenever a change to it changes the
# trained weights: it is part of the cache key, so stale checkpoints are not loaded.
RECIPE = 2

__all__ = ["ShapesVAEConfig", "ShapesLDMConfig", "ShapesLDM", "load_vae", "load_ldm", "train_vae", "train_ldm",
           "shapes_tokenizer"]


def shapes_tokenizer(max_length: int = 10) -> WordTokenizer:
    """The tokenizer of the offline shapes model: every word its captions can use."""
    words = ["a"] + list(SHAPE_SIZES) + list(SHAPE_COLORS) + list(SHAPE_KINDS)
    words += [w for phrase in SHAPE_POSITIONS for w in phrase.split()]
    return WordTokenizer(words, max_length=max_length)


@dataclass
class ShapesVAEConfig:
    image_size: int = 32
    block_out_channels: tuple = (16, 32, 32)  # three levels: 32×32 → 8×8
    latent_channels: int = 4
    norm_num_groups: int = 8
    n_images: int = 4096
    steps: int = 400
    batch_size: int = 32
    lr: float = 2e-3
    kl_weight: float = 1e-6  # per latent element, relative to the per-pixel MSE
    seed: int = 0

    def autoencoder_config(self, scaling_factor: float = 1.0) -> AutoencoderConfig:
        return AutoencoderConfig(latent_channels=self.latent_channels, block_out_channels=self.block_out_channels,
                                 layers_per_block=1, norm_num_groups=self.norm_num_groups,
                                 scaling_factor=scaling_factor)


@dataclass
class ShapesLDMConfig:
    vae: ShapesVAEConfig = field(default_factory=ShapesVAEConfig)
    unet_channels: tuple = (32, 64)
    unet_heads: int = 4
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    max_length: int = 10
    n_images: int = 8192
    # 900 steps of 48 fit notebook 11's 4-minute budget on 2 CPU cores; measured with
    # benchmarks/quality_shapes.py, 1000 steps of 64 were no better on text-to-image and RePaint
    steps: int = 900
    batch_size: int = 48
    lr: float = 2e-3
    cond_dropout: float = 0.1  # fraction of captions replaced by "" (for guidance)
    ema_decay: float = 0.995
    seed: int = 1

    def unet_config(self) -> UNetConfig:
        return UNetConfig.small(block_out_channels=self.unet_channels, cross_attention_dim=self.text_width,
                                num_heads=self.unet_heads, norm_num_groups=16)

    def text_config(self, vocab_size: int) -> CLIPTextConfig:
        return CLIPTextConfig(vocab_size=vocab_size, width=self.text_width, n_layers=self.text_layers,
                              n_heads=self.text_heads, n_positions=self.max_length, mlp_width=4 * self.text_width)


def _check_config(config, cls):
    if config is None:
        return cls()
    if isinstance(config, dict):
        return cls(**config)
    if not isinstance(config, cls):
        raise TypeError(f"config must be a {cls.__name__} or a dict, got {type(config).__name__}")
    return config


def _progress(total: int, desc: str, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not show, mininterval=1.0)


def _set_lr(opt: torch.optim.Optimizer, step: int, steps: int, lr: float, warmup: int = 50) -> None:
    """Linear warm-up, then cosine decay to 10% of ``lr`` (``course_lib.train.lr_at``)."""
    for group in opt.param_groups:
        group["lr"] = lr_at(step, lr, steps, min(warmup, steps), min_lr_ratio=0.1)


def _data_key(seed: int, size: int) -> str:
    """Fingerprint of the generator's first images: a change to ``make_shapes`` changes the cache key."""
    return fingerprint(*make_shapes(4, seed=seed, size=size))


# ------------------------------------------------------------------------------ the autoencoder

def train_vae(config: ShapesVAEConfig | None = None, progress: bool = True) -> tuple[Autoencoder, list[float]]:
    """Train the shapes autoencoder; returns ``(model, per-step loss)``. Deterministic given the seed."""
    cfg = _check_config(config, ShapesVAEConfig)
    images, _ = make_shapes(cfg.n_images, seed=cfg.seed, size=cfg.image_size)
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    model = Autoencoder(cfg.autoencoder_config())
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history, start = [], time.perf_counter()
    n_latent = cfg.latent_channels * (cfg.image_size // 4) ** 2
    with _progress(cfg.steps, "shapes-vae", progress) as bar:
        for step in range(cfg.steps):
            _set_lr(opt, step, cfg.steps, cfg.lr)
            x = images[torch.randint(0, cfg.n_images, (cfg.batch_size,), generator=g)]  # [B, 3, H, W]
            dist = model.encode(x)
            x_hat = model.decode(dist.sample(g))
            rec = F.mse_loss(x_hat, x)
            kl = dist.kl().mean() / n_latent  # per latent element
            loss = rec + cfg.kl_weight * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append(rec.item())
            bar.update(1)
            bar.set_postfix(mse=f"{rec.item():.4f}", refresh=False)
    model.eval()
    with torch.no_grad():  # SD's recipe: scale latents to unit variance (0.18215 for SD v1)
        z = torch.cat([model.encode(images[i:i + 256]).mean for i in range(0, min(cfg.n_images, 1024), 256)])
    model.config.scaling_factor = float(1.0 / z.std())
    model.train_seconds = round(time.perf_counter() - start, 1)
    return model, history


def load_vae(config: ShapesVAEConfig | dict | None = None, progress: bool = True, retrain: bool = False) -> Autoencoder:
    """The trained shapes autoencoder (``zoo.load("shapes-vae")``): trains and caches on first use."""
    cfg = _check_config(config, ShapesVAEConfig)
    path = cache_path("shapes-vae", cfg, data=_data_key(cfg.seed, cfg.image_size), recipe=RECIPE)
    if path.exists() and not retrain:
        state, meta = load_tensors(path)
        model = Autoencoder(cfg.autoencoder_config(meta["scaling_factor"]))
        load_strict(model, state, "cached shapes-vae weights")
        model.history = meta.get("history", [])
        model.train_seconds = meta.get("train_seconds")
        return model.eval()
    model, history = train_vae(cfg, progress)
    save_tensors(path, model.state_dict(), {"scaling_factor": model.config.scaling_factor, "history": history,
                                            "config": dataclasses.asdict(cfg),
                                            "train_seconds": model.train_seconds})
    model.history = history
    return model


# ------------------------------------------------------------------------------ the latent diffusion model

class ShapesLDM(LatentDiffusion):
    """``LatentDiffusion`` for 32×32 shapes, plus ``sample`` (the zoo API) and the training loss history."""

    history: list[float] = []
    train_seconds: float | None = None  # wall-clock training time (None: unknown)

    @torch.no_grad()
    def sample(self, prompts, guidance_scale: float = 5.0, n_steps: int = 50,
               generator: torch.Generator | None = None, eta: float = 0.0) -> torch.Tensor:
        """Images ``[N, 3, 32, 32]`` in [-1, 1] for the prompts (DDIM, classifier-free guidance)."""
        images = self.text_to_image(prompts, guidance_scale=guidance_scale, n_steps=n_steps, eta=eta,
                                    generator=generator)
        return images.clamp(-1, 1)


def train_ldm(config: ShapesLDMConfig | None = None, vae: Autoencoder | None = None,
              progress: bool = True) -> ShapesLDM:
    """Train the text encoder and UNet jointly on the VAE's latents (ε-prediction, DDPM eq. 14)."""
    cfg = _check_config(config, ShapesLDMConfig)
    if isinstance(cfg.vae, dict):
        cfg = dataclasses.replace(cfg, vae=ShapesVAEConfig(**cfg.vae))
    vae = load_vae(cfg.vae, progress) if vae is None else vae
    vae.eval()
    tokenizer = shapes_tokenizer(cfg.max_length)
    images, captions = make_shapes(cfg.n_images, seed=cfg.seed, size=cfg.vae.image_size)
    with torch.no_grad():  # encode once; a fresh posterior sample is drawn every step
        dists = [vae.encode(images[i:i + 256]) for i in range(0, cfg.n_images, 256)]
        mean = torch.cat([d.mean for d in dists])  # [N, C, h, w]
        std = torch.cat([d.std for d in dists])
    ids_all = tokenizer(captions)  # [N, L]
    empty = tokenizer([""])  # [1, L]
    scale = vae.config.scaling_factor

    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    text = CLIPTextEncoder(cfg.text_config(tokenizer.vocab_size))
    unet = UNetModel(cfg.unet_config())
    params = {f"text_encoder.{k}": p for k, p in text.named_parameters()}
    params.update({f"unet.{k}": p for k, p in unet.named_parameters()})
    ema = {k: p.detach().clone() for k, p in params.items()}
    opt = torch.optim.AdamW(params.values(), lr=cfg.lr, weight_decay=0.0, fused=True)  # one kernel for all tensors
    betas = make_betas("scaled_linear", 1000)
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    # On 8×8 latents (64 tokens) the written-out attention trains about 20% faster than
    # the fused SDPA kernel, whose backward pass is built for long sequences; same numbers.
    unet.set_attention_backend("naive")
    history = []
    with _progress(cfg.steps, "shapes-ldm", progress) as bar:
        for step in range(cfg.steps):
            _set_lr(opt, step, cfg.steps, cfg.lr)
            idx = torch.randint(0, cfg.n_images, (cfg.batch_size,), generator=g)
            z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)) * scale  # [B, C, h, w]
            ids = ids_all[idx].clone()
            drop = torch.rand(cfg.batch_size, generator=g) < cfg.cond_dropout
            ids[drop] = empty  # the unconditional prompt
            t = torch.randint(0, 1000, (cfg.batch_size,), generator=g)
            noise = torch.randn(z0.shape, generator=g)
            z_t = q_sample(z0, t, noise, alphas_cumprod)
            loss = F.mse_loss(unet(z_t, t, text(ids)), noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema_update(ema.values(), params.values(), min(cfg.ema_decay, (1 + step) / (10 + step)))
            history.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(ema[k])
    unet.set_attention_backend("sdpa")
    ldm = ShapesLDM(vae, unet, text, tokenizer, betas, image_size=cfg.vae.image_size)
    ldm.history = history
    ldm.train_seconds = round(time.perf_counter() - start, 1)
    return ldm


def load_ldm(config: ShapesLDMConfig | dict | None = None, progress: bool = True, retrain: bool = False) -> ShapesLDM:
    """The trained shapes latent diffusion model (``zoo.load("shapes-ldm")``); cached after the first call."""
    cfg = _check_config(config, ShapesLDMConfig)
    if isinstance(cfg.vae, dict):
        cfg = dataclasses.replace(cfg, vae=ShapesVAEConfig(**cfg.vae))
    vae = load_vae(cfg.vae, progress)
    path = cache_path("shapes-ldm", cfg, data=_data_key(cfg.seed, cfg.vae.image_size), recipe=RECIPE)
    if path.exists() and not retrain:
        state, meta = load_tensors(path)
        tokenizer = WordTokenizer.from_dict(meta["tokenizer"])
        text = CLIPTextEncoder(cfg.text_config(tokenizer.vocab_size))
        unet = UNetModel(cfg.unet_config())
        load_strict(text, {k[len("text_encoder."):]: v for k, v in state.items() if k.startswith("text_encoder.")},
                    "cached shapes-ldm text encoder")
        load_strict(unet, {k[len("unet."):]: v for k, v in state.items() if k.startswith("unet.")},
                    "cached shapes-ldm UNet")
        ldm = ShapesLDM(vae, unet, text, tokenizer, make_betas("scaled_linear", 1000), image_size=cfg.vae.image_size)
        ldm.history = meta.get("history", [])
        ldm.train_seconds = meta.get("train_seconds")
        return ldm
    ldm = train_ldm(cfg, vae, progress)
    state = {f"text_encoder.{k}": v for k, v in ldm.text_encoder.state_dict().items()}
    state.update({f"unet.{k}": v for k, v in ldm.unet.state_dict().items()})
    save_tensors(path, state, {"tokenizer": ldm.tokenizer.to_dict(), "history": ldm.history,
                               "config": dataclasses.asdict(cfg), "train_seconds": ldm.train_seconds})
    return ldm
