"""The model zoo: small models of the real architectures, trained offline on demand.

``load(name)`` returns a trained model. The first call trains it
deterministically (with a progress bar) and caches the weights; later calls,
in any notebook, read the cache. The cache lives in ``$COURSE_LIB_CACHE`` or
``~/.cache/course_lib`` and every file name carries a hash of the model's
config, so changing a config retrains instead of loading stale weights.
Files are written atomically (temporary file, then rename), so an interrupted
run never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import importlib

from .cache import cache_dir, cache_path, config_key  # noqa: F401

# name -> (module inside course_lib.zoo, function that returns the trained model)
REGISTRY = {
    "tiny-gpt": ("tiny_gpt", "load"),
    "digits-ddpm": ("digits_ddpm", "load"),
    "shapes-vae": ("shapes", "load_vae"),
    "shapes-ldm": ("shapes", "load_ldm"),
}


def names() -> list[str]:
    """The models the zoo knows."""
    return sorted(REGISTRY)


def load(name: str, **kwargs):
    """Return the trained zoo model ``name`` (training and caching it on first use)."""
    if not isinstance(name, str):
        raise TypeError(f"zoo model name must be a str, got {type(name).__name__}")
    if name not in REGISTRY:
        raise ValueError(f"unknown zoo model {name!r}; available: {', '.join(names())}")
    module, func = REGISTRY[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), func)(**kwargs)
