"""Where tensors live, in which precision, and how random draws stay repeatable.

* ``get_device()``: the best accelerator there is (CUDA, then Apple MPS, then the CPU).
* ``amp_dtype(device)`` / ``autocast(device)``: the reduced precision a device
  supports well — bfloat16 on CUDA cards that have it (Ampere and newer), float16
  on older CUDA cards (a Colab T4) and on MPS, float32 (no autocast) on the CPU.
* ``randn(shape, generator=..., device=...)``: Gaussian noise drawn on the
  *generator's* device and then moved, so a seeded run gives the same numbers
  whatever device the model is on (diffusers' ``randn_tensor`` does the same).
* ``seeded(seed)``: a block of code with a fixed seed that leaves the global
  random state exactly as it found it (model initialisation in the zoo, tests).
* ``seed_everything(seed)``: seed Python, NumPy and PyTorch for a notebook.
"""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

from .checks import check_generator, check_int

__all__ = ["get_device", "amp_dtype", "autocast", "randn", "seeded", "seed_everything"]


def get_device() -> torch.device:
    """Return the best available device: CUDA, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def amp_dtype(device=None) -> torch.dtype:
    """The reduced precision to run models in on ``device`` (default: ``get_device()``).

    bfloat16 keeps float32's exponent range (no overflow), so it is preferred where
    the hardware has it (``torch.cuda.is_bf16_supported()``); a T4 does not, and gets
    float16. MPS gets float16. On the CPU half precision is slow and gains nothing
    for these models, so the answer there is float32.
    """
    device = get_device() if device is None else torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def autocast(device=None):
    """``torch.autocast`` in ``amp_dtype(device)``; a no-op context on the CPU (float32)."""
    device = get_device() if device is None else torch.device(device)
    dtype = amp_dtype(device)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def randn(shape, generator: torch.Generator | None = None, device=None,
          dtype: torch.dtype | None = None) -> torch.Tensor:
    """N(0, I) noise of ``shape``: drawn on the generator's device, then moved to ``device``.

    ``torch.randn(..., generator=g, device="cuda")`` raises when ``g`` is a CPU
    generator, and a CUDA generator draws other numbers than a CPU one from the
    same seed. Drawing where the generator lives and moving the result makes a
    seeded CPU generator give the same noise for a model on any device.
    """
    check_generator(generator)
    device = torch.device("cpu") if device is None else torch.device(device)
    draw_on = generator.device if generator is not None else device
    noise = torch.randn(tuple(shape), generator=generator, device=draw_on, dtype=torch.float32)
    return noise.to(device=device, dtype=dtype or torch.get_default_dtype())


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block with ``torch.manual_seed(seed)`` and restore the global RNG afterwards.

    Building and training a model inside ``with seeded(0):`` is deterministic, and the
    code after it sees the same random numbers whether or not the block ran (e.g. a
    notebook cell after ``zoo.load``, whether the model was trained or read from the cache).
    """
    check_int("seed", seed, 0)
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (all devices); return a seeded CPU generator.

    Seeding makes a run repeatable on the same machine and library versions;
    different hardware may still round differently.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    return torch.Generator().manual_seed(seed)
