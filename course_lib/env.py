"""Environment check: which packages are installed, which device, which world.

The course runs in one of two worlds (see the README):

* **offline** (the default, CI, stored outputs): small models of the real
  architectures trained on data that ships with Python and its packages;
* **pretrained**: real weights from the Hugging Face hub, when it is reachable.

`world()` decides which one a notebook is in, and never hangs: with
``HF_HUB_OFFLINE=1`` it does not touch the network at all, otherwise it tries
one HTTPS connection with a short timeout.
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


def world(timeout: float = 2.0) -> str:
    """``"pretrained"`` when the hub is reachable, else ``"offline"``."""
    return "pretrained" if hub_reachable(timeout) else "offline"


def check_environment(timeout: float = 2.0, file=None) -> bool:
    """Print an ``[OK]``/``[FAIL]`` line per package, the device and the world.

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
    if offline_forced():
        print("world: offline (HF_HUB_OFFLINE=1: the hub is not contacted)", file=out)
    elif hub_reachable(timeout):
        print(f"world: pretrained ({HUB_HOST} reachable: real weights can be downloaded)", file=out)
    else:
        print(f"world: offline ({HUB_HOST} not reachable within {timeout:g}s)", file=out)
    return ok
