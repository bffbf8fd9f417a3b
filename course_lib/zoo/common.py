"""What every zoo model shares: one way to configure, train, cache and load it.

Every zoo module's ``load`` has the same signature and the same four steps::

    def load(config=None, *, device=None, retrain=False, progress=True, **overrides) -> MyModel:
        config = make_config(MyConfig, config, overrides, "my-model")      # 1. the recipe
        device = training_device(device)                                   # 2. where to train and run
        path = cache_path("my-model", config, data=fingerprint(data), recipe=RECIPE)
        tensors, meta = load_or_train("my-model", path, lambda: fit(config, device, progress),
                                      seed=config.seed, retrain=retrain, progress=progress,
                                      estimate_s=SECONDS_PER_STEP * config.steps)   # 3. cache or train
        model = build(config)                                              # 4. weights into a fresh model
        load_cached(model, tensors, path, "my-model")
        return model.to(device)

The rules this gives every model:

* **Options.** ``overrides`` replace fields of the model's config dataclass (a dict
  for a nested config field changes only the fields it names); an unknown name is a
  ``ValueError`` listing the allowed ones, a value of the wrong type a ``TypeError``.
* **Device.** ``device=None`` means ``course_lib.device.get_device()``: a GPU when
  there is one. Training runs there and the model is returned there. The weights
  are cached on the CPU, and the device is not part of the cache key (the config,
  a fingerprint of the training data and the ``RECIPE`` version are), so weights
  trained on a GPU are reused on a CPU and the other way round.
* **Randomness.** Training runs inside ``seeded(config.seed)`` (batches, noise and
  timesteps come from the training code's own ``torch.Generator``), so it is
  repeatable, and the global random state after ``load`` is the same whether the
  model was trained or read from the cache.
* **Files.** Weights and metadata (loss history, training time ...) are one
  safetensors file, written atomically (fsync, then rename), and ``load_or_train``
  returns what it read back from that file, so a cold and a warm cache give
  identical models. A damaged, truncated or mismatched file raises
  ``DamagedFileError`` naming the file and the remedy (``retrain=True``).
* **Telling the reader.** On a cold cache ``load_or_train`` prints one line before
  training: what it trains, about how long it takes on a 2-core CPU, and where the
  weights will be cached (``progress=False`` silences it and the progress bar).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..checkpoint import DamagedFileError, load_strict
from ..device import get_device, seeded
from .cache import load_tensors, save_tensors

__all__ = ["make_config", "training_device", "load_or_train", "load_cached", "DamagedFileError"]

_GENERIC_OPTIONS = ("device", "retrain", "progress")


def make_config(cls, config, overrides: dict, name: str, extra_options: tuple[str, ...] = ()):
    """The config a ``load`` call asks for: ``cls()``, a given ``cls`` instance or dict, plus ``overrides``.

    ``name`` (the zoo name) and ``extra_options`` (the module's own keywords, e.g.
    ``on_sample``) appear in the error for an unknown option.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if config is None:
        config = cls()
    elif isinstance(config, dict):
        config = _replace(cls(), config, name, ())
    elif not isinstance(config, cls):
        raise TypeError(f"config must be a {cls.__name__} or a dict of its fields, got {type(config).__name__}")
    return _replace(config, overrides, name, _GENERIC_OPTIONS + tuple(extra_options))


def _replace(config, changes: dict, name: str, other_options: tuple[str, ...]):
    fields = [f.name for f in dataclasses.fields(config)]
    unknown = sorted(set(changes) - set(fields))
    if unknown:
        allowed = ", ".join(fields + list(other_options))
        raise ValueError(f"unknown {name} option(s) {', '.join(unknown)}; allowed: {allowed}")
    updates = {}
    for key, value in changes.items():
        current = getattr(config, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):  # a nested config: change some fields
            value = _replace(current, value, f"{name}.{key}", ())
        updates[key] = _check_type(f"{name} option {key}", value, current)
    return dataclasses.replace(config, **updates)


def _check_type(what: str, value, default):
    """``value`` if it has the type of the field's current value (ints pass for floats, lists for tuples)."""
    if default is None or value is None:  # optional fields (e.g. ``max_train_chars``): any value
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, tuple):
        ok = isinstance(value, (tuple, list))
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise TypeError(f"{what} must be of type {type(default).__name__} like its default {default!r}, "
                        f"got {type(value).__name__} {value!r}")
    return value


def training_device(device=None) -> torch.device:
    """Where a zoo model trains and runs: ``device``, or the best one there is (``get_device()``)."""
    return get_device() if device is None else torch.device(device)


def load_or_train(name: str, path: Path, train_fn: Callable[[], tuple[dict, dict]], *, seed: int,
                  retrain: bool = False, progress: bool = True,
                  estimate_s: float | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, metadata)`` from the cache file ``path``, training them first if needed.

    ``train_fn() -> (state dict, JSON-able metadata)`` runs when the file is missing
    or ``retrain`` is set, inside ``seeded(seed)``; its result is saved atomically
    and read back. ``estimate_s``: the training time on a 2-core CPU, for the line
    printed before training.
    """
    path = Path(path)
    if retrain or not path.exists():
        if progress:
            print(_training_line(name, path, estimate_s), flush=True)
        with seeded(seed):
            tensors, meta = train_fn()
        save_tensors(path, tensors, meta)
    return read_cache(name, path)


def _training_line(name: str, path: Path, estimate_s: float | None) -> str:
    if estimate_s is None:
        took = ""
    elif estimate_s < 90:
        took = f", about {max(5, round(estimate_s, -1)):.0f} s on a 2-core CPU"
    else:
        took = f", about {estimate_s / 60:.0f} min on a 2-core CPU"
    return f"zoo: training {name} (not cached yet{took}; a GPU is faster); it will be cached as {path}"


def _remedy(name: str) -> str:
    return f"delete it or call zoo.load({name!r}, retrain=True) to train it again"


def read_cache(name: str, path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """``load_tensors(path)``; a damaged file's error also says how to recover."""
    try:
        return load_tensors(path)
    except DamagedFileError as exc:
        raise DamagedFileError(f"cached {name} weights: {exc}; {_remedy(name)}") from exc


def load_cached(model: nn.Module, tensors: dict[str, torch.Tensor], path: Path, name: str,
                prefix: str = "") -> nn.Module:
    """Load the cached ``tensors`` whose keys start with ``prefix`` (prefix removed) into ``model``, strictly.

    Keys or shapes that don't fit mean the file is not what this code trains:
    ``DamagedFileError`` naming the file, the keys and the remedy.
    """
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        load_strict(model, state, f"cached {name} weights {Path(path).name}")
    except (KeyError, ValueError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        raise DamagedFileError(f"{message}; the file {path} does not fit the model: {_remedy(name)}") from exc
    return model
