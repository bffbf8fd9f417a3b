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
* ``cpu_threads("auto")``: how many threads PyTorch uses on the CPU, chosen from the
  cores that are free right now and OpenMP's wait policy (``course_lib.train.train``
  uses it; ``choose_cpu_threads`` says why).
"""

from __future__ import annotations

import contextlib
import os
import random
import time

import numpy as np
import torch

from .checks import check_generator, check_int, check_number

__all__ = ["get_device", "amp_dtype", "autocast", "randn", "seeded", "seed_everything",
           "usable_cores", "idle_cores", "passive_wait", "choose_cpu_threads", "cpu_threads"]


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


# ----------------------------------------------------------------------------- CPU threads


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask: a container's or ``taskset``'s CPU set)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def idle_cores(interval: float = 0.2) -> float:
    """How many of this process's cores were idle during the last ``interval`` seconds.

    Linux: the idle share of each usable core from ``/proc/stat``, over ``interval``
    (this process sleeps meanwhile, so only other work counts). Elsewhere: cores minus
    the 1-minute load average (which may count this process's own recent work).
    """
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        before = _cpu_ticks(cpus)
        time.sleep(interval)
        after = _cpu_ticks(cpus)
    except OSError:  # no /proc/stat (macOS, Windows)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        return max(0.0, usable_cores() - load)
    return _idle_between(before, after)


def _idle_between(before: dict, after: dict) -> float:
    """Idle cores between two ``_cpu_ticks`` snapshots: Σ over cores of idle ticks / all ticks."""
    idle = 0.0
    for cpu, (idle1, total1) in after.items():
        idle0, total0 = before.get(cpu, (idle1, total1))
        idle += (idle1 - idle0) / (total1 - total0) if total1 > total0 else 1.0
    return idle


def _cpu_ticks(cpus=None, path: str = "/proc/stat") -> dict[int, tuple[int, int]]:
    """{cpu: (idle ticks, all ticks)} from the per-CPU lines of /proc/stat (``cpus``: which; None = all)."""
    ticks = {}
    with open(path) as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and (cpus is None or int(name[3:]) in cpus):
                values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
                ticks[int(name[3:])] = (values[3] + values[4], sum(values))
    if not ticks:
        raise OSError(f"no per-CPU lines in {path}")
    return ticks


def passive_wait() -> bool:
    """Whether PyTorch's OpenMP threads sleep while they wait (``OMP_WAIT_POLICY=PASSIVE`` or
    ``GOMP_SPINCOUNT=0``) instead of spinning. OpenMP reads these when it is loaded, with
    ``import torch``: they must be in the environment before the process starts."""
    return (os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
            or os.environ.get("GOMP_SPINCOUNT", "").strip() == "0")


def choose_cpu_threads(idle: float, limit: int, passive: bool = False) -> int:
    """PyTorch's CPU thread count for training: ``limit`` threads where waiting threads sleep
    (``passive``); otherwise one per idle core — a core counts when it is at least 75% idle —
    and at least 1.

    Why (``benchmarks/contention.py``: 40 steps of the tiny-gpt recipe on 2 cores next to
    a second process training the same model, on a machine loaded further by other work
    to a load average of 7–12):
    with OpenMP's default wait policy the threads *spin* at the barrier that ends every
    parallel operation, waiting for the one whose core the other process holds; two
    threads took 282 s, one thread 99–131 s. With ``OMP_WAIT_POLICY=PASSIVE`` waiting
    threads sleep instead, and two threads took 51–66 s (one: 101 s). So: all threads
    when the wait is passive, else no more threads than idle cores. The 75% allows for
    background noise (a browser, the notebook server) on a machine that is otherwise idle.
    """
    check_number("idle", idle, 0)
    check_int("limit", limit, 1)
    return limit if passive else max(1, min(limit, int(idle + 0.25)))


@contextlib.contextmanager
def cpu_threads(threads="auto"):
    """Run a block with ``torch.set_num_threads(n)``, restoring the previous count afterwards.

    ``threads``: an int, or ``"auto"``: ``choose_cpu_threads(idle_cores(), limit, passive_wait())``
    with ``limit`` the usable cores and at most the current setting (PyTorch's default is
    one thread per core; a smaller count set by the user is kept). Yields the count used.
    """
    previous = torch.get_num_threads()
    if threads == "auto":
        limit, passive = min(usable_cores(), previous), passive_wait()
        threads = choose_cpu_threads(0.0 if passive else idle_cores(), limit, passive)
    check_int("threads", threads, 1, hint='or "auto"')
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(previous)
