"""The model zoo: small models of the real architectures, trained offline on demand.

``load(name, *, device=None, retrain=False, progress=True, **overrides)`` returns a
trained model. The first call trains it deterministically (saying so, with a
progress bar) and caches the weights; later calls, in any notebook, read the
cache. Every model follows the same contract (``course_lib.zoo.common``):

* ``device``: where it trains and runs (default ``get_device()``: a GPU when there
  is one); the weights are cached on the CPU and the device is not part of the key;
* ``retrain=True``: train again and overwrite the cached weights;
* ``progress=False``: no announcement and no progress bar;
* ``overrides``: fields of the model's config dataclass (e.g. ``steps=20``); an
  unknown name is a ``ValueError`` listing the allowed ones;
* the global random state after ``load`` is the same whether it trained or not;
* a damaged cache file raises ``DamagedFileError`` naming the file and the remedy.

What each name returns:

==============  ==================================================================
``tiny-gpt``     ``(GPTModel, BPETokenizer)`` — a small GPT-2 on English prose
``digits-ddpm``  ``DigitsDiffusion`` — class-conditional DDPM/DDIM on 8×8 digits
``shapes-vae``   ``Autoencoder`` — the SD autoencoder on 32×32 captioned shapes
``shapes-ldm``   ``ShapesLDM`` — a latent-diffusion pipeline on those shapes
==============  ==================================================================

The cache lives in ``$COURSE_LIB_CACHE`` or ``~/.cache/course_lib``; each file name
carries a hash of the config, the training data and the recipe version, so
changing any of them trains a new model instead of loading stale weights.
"""

from __future__ import annotations

import importlib

from ..checkpoint import DamagedFileError  # noqa: F401  (what a damaged cache file raises)
from .cache import cache_dir, cache_path, config_key  # noqa: F401

# name -> (module inside course_lib.zoo, its load function, what it returns)
REGISTRY = {
    "tiny-gpt": ("tiny_gpt", "load", "(GPTModel, BPETokenizer)"),
    "digits-ddpm": ("digits_ddpm", "load", "DigitsDiffusion"),
    "shapes-vae": ("shapes", "load_vae", "Autoencoder"),
    "shapes-ldm": ("shapes", "load_ldm", "ShapesLDM"),
}


def names() -> list[str]:
    """The models the zoo knows."""
    return sorted(REGISTRY)


def load(name: str, *, device=None, retrain: bool = False, progress: bool = True, **overrides):
    """Return the trained zoo model ``name`` (training and caching it on first use); see the module docstring."""
    if not isinstance(name, str):
        raise TypeError(f"zoo model name must be a str, got {type(name).__name__}")
    if name not in REGISTRY:
        raise ValueError(f"unknown zoo model {name!r}; available: {', '.join(names())}")
    module, func, _ = REGISTRY[name]
    loader = getattr(importlib.import_module(f"{__name__}.{module}"), func)
    return loader(device=device, retrain=retrain, progress=progress, **overrides)
