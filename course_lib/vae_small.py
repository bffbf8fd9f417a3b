"""Notebook 07's teaching models: a small convolutional autoencoder and VAE (digits-sized images).

They are deliberately simpler than Stable Diffusion's autoencoder
(``course_lib.autoencoder``: GroupNorm resnets, attention, a spatial latent) — a few
strided convolutions and a flat latent of a handful of numbers that can be
plotted — but the VAE uses the same Gaussian code as the big one:
``autoencoder.reparameterize`` and ``autoencoder.kl_to_standard_normal``.

* ``ConvAutoencoder``: x → encoder → z → decoder → x̂, trained on ‖x − x̂‖².
* ``ConvVAE`` (Kingma & Welling 2014, "Auto-Encoding Variational Bayes"): the
  encoder outputs q(z|x) = N(μ, diag σ²); a sample is drawn with the
  reparameterisation trick z = μ + σ ⊙ ε, ε ~ N(0, I) (their eq. 10), so that
  gradients flow through μ and σ; the loss is the negative ELBO

      L = ‖x − x̂‖² + β · KL(N(μ, σ²) ‖ N(0, I)),
      KL = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²)          (their appendix B),

  with β = 1 the plain VAE and β ≠ 1 the β-VAE of Higgins et al. 2017.
  (‖x − x̂‖² is a Gaussian log-likelihood with fixed variance ½, up to a constant.)

``train_autoencoder(model, images, epochs, beta=None)`` trains either one
deterministically with the course's training loop (``course_lib.train.train``)
and returns the per-epoch history.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .autoencoder import kl_to_standard_normal, reparameterize
from .checks import check_int, check_number
from .device import randn

__all__ = ["ConvAutoencoder", "ConvVAE", "vae_loss", "kl_to_standard_normal", "reparameterize",
           "train_autoencoder"]


class ConvAutoencoder(nn.Module):
    """[B, C, S, S] → z [B, latent_dim] → [B, C, S, S] in [-1, 1]; S must be a multiple of 4."""

    def __init__(self, in_channels: int = 1, image_size: int = 16, latent_dim: int = 2,
                 channels: tuple[int, int] = (32, 64)):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 (two halvings), got {image_size}")
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be ≥ 1, got {latent_dim}")
        c0, c1 = channels
        s = image_size // 4
        self.in_channels, self.image_size, self.latent_dim = in_channels, image_size, latent_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, c0, 3, stride=2, padding=1), nn.SiLU(),  # [B, c0, S/2, S/2]
            nn.Conv2d(c0, c1, 3, stride=2, padding=1), nn.SiLU(),  # [B, c1, S/4, S/4]
            nn.Flatten(), nn.Linear(c1 * s * s, self._head_dim()),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, c1 * s * s), nn.SiLU(), nn.Unflatten(1, (c1, s, s)),
            nn.ConvTranspose2d(c1, c0, 4, stride=2, padding=1), nn.SiLU(),  # [B, c0, S/2, S/2]
            nn.ConvTranspose2d(c0, in_channels, 4, stride=2, padding=1), nn.Tanh(),  # [B, C, S, S]
        )

    def _head_dim(self) -> int:
        return self.latent_dim

    def _check(self, x):
        want = (self.in_channels, self.image_size, self.image_size)
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != want:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be [B, {want[0]}, {want[1]}, {want[2]}], got {shape}")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.encoder(x)  # [B, latent_dim]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The point in latent space that represents x (for plots)."""
        return self.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)  # [B, C, S, S]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def loss(self, x: torch.Tensor, beta=None, generator=None, noise=None) -> dict:
        """{"loss", "recon", "kl"}: the squared reconstruction error per image (no KL term here)."""
        recon = ((self(x) - x) ** 2).sum(dim=(1, 2, 3)).mean()
        return {"loss": recon, "recon": recon, "kl": torch.zeros((), device=x.device)}


class ConvVAE(ConvAutoencoder):
    """The same network; the encoder head outputs (μ, log σ²) and the latent is sampled."""

    def _head_dim(self) -> int:
        return 2 * self.latent_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        mu, logvar = self.encoder(x).chunk(2, dim=-1)  # [B, latent_dim] each
        return mu, logvar

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[0]  # the mean μ

    reparameterize = staticmethod(reparameterize)  # z = μ + σ ⊙ ε (course_lib.autoencoder)

    def forward(self, x: torch.Tensor, generator=None, noise=None):
        """(reconstruction, μ, log σ²); ε is ``noise`` or drawn from ``generator``."""
        mu, logvar = self.encode(x)
        return self.decode(reparameterize(mu, logvar, generator, noise)), mu, logvar

    def loss(self, x: torch.Tensor, beta: float = 1.0, generator=None, noise=None) -> dict:
        recon, mu, logvar = self(x, generator, noise)
        return vae_loss(x, recon, mu, logvar, beta)

    @torch.no_grad()
    def sample(self, n: int, generator=None) -> torch.Tensor:
        """Decode z ~ N(0, I): new images from the prior (z drawn on the generator's device)."""
        p = next(self.parameters())
        return self.decode(randn((n, self.latent_dim), generator=generator, device=p.device, dtype=p.dtype))


def vae_loss(x, recon, mu, logvar, beta: float = 1.0) -> dict:
    """Negative ELBO with weight β on the KL term, averaged over the batch."""
    if beta < 0:
        raise ValueError(f"beta must be ≥ 0, got {beta}")
    rec = ((recon - x) ** 2).sum(dim=(1, 2, 3)).mean()
    kl = kl_to_standard_normal(mu, logvar).mean()
    return {"loss": rec + beta * kl, "recon": rec, "kl": kl}


def train_autoencoder(model: ConvAutoencoder, images: torch.Tensor, epochs: int = 20,
                      beta: float | None = None, batch_size: int = 128, lr: float = 2e-3,
                      seed: int = 0, progress: bool = True, desc: str | None = None) -> dict:
    """Train with Adam on shuffled mini-batches; return {"loss", "recon", "kl"} per epoch.

    ``beta`` is needed for a ``ConvVAE`` (1.0: plain VAE) and must be None for a
    ``ConvAutoencoder``. The loop is ``course_lib.train.train`` (constant ``lr``, no
    weight decay, so AdamW is Adam); the shuffles and the VAE's ε come from one
    ``torch.Generator`` seeded with ``seed``, drawn on the CPU, so a run gives the same
    numbers on any device, and the global random state is left as it was.
    """
    from .train import train

    is_vae = isinstance(model, ConvVAE)
    if is_vae and beta is None:
        raise ValueError("a ConvVAE needs beta (1.0 for the plain VAE)")
    if not is_vae and beta is not None:
        raise ValueError("beta only applies to a ConvVAE; a ConvAutoencoder has no KL term")
    check_int("epochs", epochs, 1)
    check_int("batch_size", batch_size, 1)
    if is_vae:
        check_number("beta", beta, 0.0)
    n = len(images)
    per_epoch = math.ceil(n / batch_size)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.arange(n)

    def batch(step):  # [B, C, S, S] and, for a VAE, its ε [B, latent_dim]
        nonlocal perm
        i = step % per_epoch
        if i == 0:  # a new epoch: a new shuffle
            perm = torch.randperm(n, generator=gen)
        x = images[perm[i * batch_size:(i + 1) * batch_size]]
        return x, (randn((len(x), model.latent_dim), generator=gen) if is_vae else None)

    parts = []  # (loss, recon, kl, batch size) per step, for the per-epoch averages

    def loss_fn(m, b):
        x, noise = b
        out = m.loss(x, beta=beta, noise=noise) if is_vae else m.loss(x)
        parts.append((out["loss"].detach(), out["recon"].detach(), out["kl"].detach(), len(x)))
        return out["loss"]

    train(model, loss_fn, batch, epochs * per_epoch, lr=lr, weight_decay=0.0, betas=(0.9, 0.999),
          schedule="constant", grad_clip=None, seed=seed, progress=progress, desc=desc or type(model).__name__)
    model.eval()
    history = {"loss": [], "recon": [], "kl": []}
    for e in range(epochs):
        rows = parts[e * per_epoch:(e + 1) * per_epoch]
        total = sum(r[3] for r in rows)
        for j, key in enumerate(history):
            history[key].append(sum(float(r[j]) * r[3] for r in rows) / total)
    return history
