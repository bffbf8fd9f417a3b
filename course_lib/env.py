"""Environment check: which packages are installed, which device, which world.

The course runs in one of two worlds (see the README):

* **offline** (the default, CI, stored outputs): small models of the real
  architectures trained on data that ships with Python and its packages;
* **pretrained**: real weights (GPT-2, Stable Diffusion v1.5), when they are in
  the local Hugging Face cache or the hub is reachable.

``world(needs=["gpt2"])`` decides which one a notebook is in and
``describe_world(needs)`` says why; ``COURSE_LIB_WORLD=offline|pretrained``
overrides both. They never hang: the cache is read from disk, and with
``HF_HUB_OFFLINE=1`` the network is not touched at all, otherwise one TCP
connection is tried with a short timeout.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys

from .device import get_device

# (import name, distribution name shown to the reader)
REQUIRED = [
    ("torch", "torch"),
    ("numpy", "numpy"),
    ("matplotlib", "matplotlib"),
    ("ipywidgets", "ipywidgets"),
    ("PIL", "pillow"),
    ("tqdm", "tqdm"),
    ("safetensors", "safetensors"),
    ("regex", "regex"),
    ("transformers", "transformers"),
    ("huggingface_hub", "huggingface-hub"),
    ("sklearn", "scikit-learn"),
    ("skimage", "scikit-image"),
]
# Reference libraries used by the equivalence checks and the tests.
OPTIONAL = [("diffusers", "diffusers"), ("peft", "peft"), ("nbval", "nbval")]

HUB_HOST = "huggingface.co"


def package_status(packages=None) -> list[tuple[str, bool, str]]:
    """Return ``(name, importable, version or error)`` for each package."""
    rows = []
    for module, name in packages if packages is not None else REQUIRED + OPTIONAL:
        try:
            mod = importlib.import_module(module)
            rows.append((name, True, str(getattr(mod, "__version__", "?"))))
        except Exception as exc:  # any import failure is a [FAIL], not a crash
            rows.append((name, False, f"{type(exc).__name__}: {exc}"))
    return rows


def offline_forced() -> bool:
    """True when the environment asks for no network (``HF_HUB_OFFLINE=1``)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in {"1", "true", "yes", "on"}


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within ``timeout`` seconds.

    Returns False at once when ``HF_HUB_OFFLINE`` is set, so offline runs
    never wait on the network.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    if offline_forced():
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


WORLDS = ("offline", "pretrained")
WORLD_VARIABLE = "COURSE_LIB_WORLD"


def _needs(needs) -> list[str]:
    if isinstance(needs, str):
        return [needs]
    needs = list(needs)
    bad = [n for n in needs if not isinstance(n, str)]
    if bad:
        raise TypeError(f"needs must be hub ids (str), got {bad!r}")
    return needs


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def decide_world(needs=(), timeout: float = 2.0) -> tuple[str, str]:
    """``(world, reason)``: which world a notebook that can use the repos ``needs`` is in, and why.

    In order: ``COURSE_LIB_WORLD=offline|pretrained`` forces it (``make test`` and
    ``make notebooks`` set ``offline``, so stored outputs never depend on a local
    cache); ``pretrained`` when every repo in ``needs`` is in the Hugging Face cache
    (``course_lib.hub.is_cached``, which works offline) or the hub is reachable;
    else ``offline``. With no ``needs``, only the hub decides.
    """
    from .hub import cache_dir, is_cached, repo_files

    needs = _needs(needs)
    forced = os.environ.get(WORLD_VARIABLE, "").strip()
    if forced:
        if forced not in WORLDS:
            raise ValueError(f"{WORLD_VARIABLE}={forced!r} is not a world; allowed: {', '.join(WORLDS)} "
                             f"(or unset, to decide from the cache and the hub)")
        return forced, f"{forced}: forced by {WORLD_VARIABLE}={forced}"
    missing = [repo for repo in needs if not is_cached(repo, repo_files(repo))]
    if needs and not missing:
        return "pretrained", f"pretrained: {_and(needs)} found in the Hugging Face cache at {cache_dir()}"
    if offline_forced():
        why = "HF_HUB_OFFLINE=1"
    elif hub_reachable(timeout):
        what = f"{_and(missing)} can be downloaded" if missing else "real weights can be downloaded"
        return "pretrained", f"pretrained: {HUB_HOST} is reachable, {what}"
    else:
        why = f"{HUB_HOST} is not reachable within {timeout:g} s"
    if not needs:
        return "offline", f"offline: {why} (this notebook needs no pretrained weights)"
    return "offline", (f"offline: {why} and {_and(missing)} {'is' if len(missing) == 1 else 'are'} "
                       f"not in the Hugging Face cache at {cache_dir()}")


def world(needs=(), timeout: float = 2.0) -> str:
    """``"pretrained"`` or ``"offline"`` for a notebook that can use the repos ``needs`` (see ``decide_world``)."""
    return decide_world(needs, timeout)[0]


def describe_world(needs=(), timeout: float = 2.0) -> str:
    """The sentence a notebook prints: the world and why, e.g.
    ``"offline: HF_HUB_OFFLINE=1 and gpt2 is not in the Hugging Face cache at /root/.cache/huggingface/hub"``."""
    return decide_world(needs, timeout)[1]


def check_environment(timeout: float = 2.0, file=None, needs=()) -> bool:
    """Print an ``[OK]``/``[FAIL]`` line per package, the device and the world (for the repos ``needs``).

    Returns True when every required package imports.
    """
    out = file or sys.stdout
    print(f"Python {sys.version.split()[0]}", file=out)
    ok = True
    required = {name for _, name in REQUIRED}
    for name, good, info in package_status():
        tag = "[OK]  " if good else "[FAIL]"
        kind = "" if name in required else "  (reference/test only)"
        print(f"{tag} {name:<16} {info}{kind}", file=out)
        ok = ok and (good or name not in required)
    device = get_device()
    print(f"device: {device}", end="", file=out)
    if device.type == "cuda":
        import torch

        print(f" ({torch.cuda.get_device_name(device)})", end="", file=out)
    print(file=out)
    print(f"world: {describe_world(needs, timeout)}", file=out)
    return ok
