"""Benchmark: zoo training on the CPU, alone and next to a competing PyTorch process.

A reader's machine is rarely idle: a second notebook kernel, a test run, Colab's two
vCPUs shared with the notebook's own data loading. This times a short run of the
tiny-gpt recipe (``course_lib.zoo.tiny_gpt.TinyGPTConfig``: the same model, batch and
context, through ``course_lib.train.train``; byte tokens instead of the BPE tokenizer,
which does not change the work per step) under several CPU policies:

* ``threads=N`` (PyTorch's default: one thread per core), ``threads=1``;
* ``OMP_WAIT_POLICY=PASSIVE`` (threads that wait for work sleep instead of spinning;
  libgomp, which PyTorch's Linux wheels use, reads it when it is loaded, so every
  variant runs as its own process);
* ``auto``: ``train``'s default, ``course_lib.device.configure_cpu_threads``.

Each variant runs idle and with a competitor: another process training the same model
with PyTorch's default threads (what a second kernel would do), started before the timed
run and stopped after it. The machine's load average is recorded with every run (on a
shared machine the "idle" runs are not idle).

    python benchmarks/contention.py                   # 40 steps per run; writes results/contention.json
    python benchmarks/contention.py --steps 10 --no-save

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def variants() -> dict[str, dict]:
    n = cores()
    return {
        f"threads={n} (torch default)": {"threads": n, "env": {}},
        "threads=1": {"threads": 1, "env": {}},
        f"threads={n}, OMP_WAIT_POLICY=PASSIVE": {"threads": n, "env": {"OMP_WAIT_POLICY": "PASSIVE"}},
        "threads=1, OMP_WAIT_POLICY=PASSIVE": {"threads": 1, "env": {"OMP_WAIT_POLICY": "PASSIVE"}},
        "auto (train's default)": {"threads": "auto", "env": {}},
        "auto, OMP_WAIT_POLICY=PASSIVE": {"threads": "auto", "env": {"OMP_WAIT_POLICY": "PASSIVE"}},
    }


# ----------------------------------------------------------------------------- the worker processes


def _setup():
    """The tiny-gpt model, a batch source and a loss: the zoo recipe's work per step."""
    import torch
    import torch.nn.functional as F

    from course_lib.data.text import TokenWindows, load_corpus
    from course_lib.device import seeded
    from course_lib.gpt2 import GPTModel
    from course_lib.zoo.tiny_gpt import TinyGPTConfig

    cfg = TinyGPTConfig()
    tokens = torch.tensor(list(load_corpus("prose", "train").encode("utf-8")[:400_000]))  # ids < 256
    with seeded(cfg.seed):
        model = GPTModel(cfg.vocab_size, cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.n_positions)
    windows = TokenWindows(tokens, cfg.n_positions, torch.Generator().manual_seed(cfg.seed))

    def loss_fn(m, batch):
        x, y = batch
        return F.cross_entropy(m(x).flatten(0, 1), y.flatten())

    return cfg, model, (lambda step: windows.sample(cfg.batch_size)), loss_fn


def worker(threads: str, steps: int) -> None:
    """Time ``steps`` training steps; print one JSON line."""
    import torch

    from course_lib.train import train

    cfg, model, batches, loss_fn = _setup()
    cpu_threads = "auto" if threads == "auto" else int(threads)
    seen = {}
    t0 = time.perf_counter()
    train(model, loss_fn, batches, steps, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=min(10, steps),
          seed=0, progress=False, cpu_threads=cpu_threads,
          callback=lambda step, m, loss: seen.setdefault("threads", torch.get_num_threads()), callback_every=1)
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "threads_used": seen.get("threads")}))


def competitor() -> None:
    """Train the same model forever with PyTorch's default threads (until killed)."""
    from course_lib.train import train

    cfg, model, batches, loss_fn = _setup()
    print("ready", flush=True)
    train(model, loss_fn, batches, 10**9, lr=cfg.lr, progress=False, cpu_threads=None)


# ----------------------------------------------------------------------------- the driver


def _python(args: list[str], env: dict) -> subprocess.Popen:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
    return subprocess.Popen([sys.executable, str(HERE), *args], env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run_one(variant: dict, steps: int, contended: bool) -> dict:
    rival = None
    if contended:
        rival = _python(["--competitor"], {})
        if rival.stdout.readline().strip() != "ready":
            raise RuntimeError("the competing process did not start: " + rival.stderr.read())
        time.sleep(2.0)  # let it get into its training loop
    load_before = os.getloadavg()
    try:
        proc = _python(["--worker", str(variant["threads"]), "--steps", str(steps)], variant["env"])
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"worker failed: {err[-2000:]}")
    finally:
        if rival is not None:
            rival.kill()
            rival.wait()
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "sec_per_step": result["seconds"] / steps, "load_average_before": [round(x, 2) for x in load_before]}


def main(steps: int = 40, repeats: int = 1, conditions=("idle", "contended"), only: str | None = None) -> dict:
    chosen = {k: v for k, v in variants().items() if only is None or any(o in k for o in only.split("|"))}
    runs = []
    for condition in conditions:
        for name, variant in chosen.items():
            for r in range(repeats):
                res = run_one(variant, steps, condition == "contended")
                runs.append({"condition": condition, "variant": name, "repeat": r,
                             "threads": variant["threads"], "env": variant["env"], **res})
                print(f"{condition:9s} {name:40s} {res['seconds']:7.2f} s  (threads {res['threads_used']}, "
                      f"load {res['load_average_before'][0]})", file=sys.stderr, flush=True)
    summary = {}
    for name in chosen:
        med = {c: round(statistics.median(r["seconds"] for r in runs if r["variant"] == name and r["condition"] == c), 2)
               for c in conditions}
        if len(med) == 2:
            med["slowdown"] = round(med["contended"] / med["idle"], 2)
        summary[name] = med
    return {
        "benchmark": "contention",
        "workload": f"tiny-gpt recipe (TinyGPTConfig defaults: d_model 128, 4 layers, 4 heads, context 128, "
                    f"batch 24), {steps} optimiser steps through course_lib.train.train, byte tokens",
        "competitor": "a second process training the same model with PyTorch's default thread count",
        "setup": {"steps": steps, "repeats": repeats, "statistic": "median of repeats", "cores": cores()},
        "summary": summary,
        "runs": runs,
        "environment": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                        "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "note": "wall-clock timings; on a shared machine even the idle runs compete with other work",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--conditions", default="idle,contended", help="idle, contended or both (comma-separated)")
    parser.add_argument("--only", help="run only the variants whose name contains one of these |-separated words")
    parser.add_argument("--worker", metavar="THREADS", help=argparse.SUPPRESS)
    parser.add_argument("--competitor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps)
    elif args.competitor:
        competitor()
    else:
        res = main(args.steps, args.repeats, tuple(args.conditions.split(",")), args.only)
        text = json.dumps(res, indent=1)
        print(text)
        if not args.no_save:
            out = HERE.parent / "results" / "contention.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text + "\n")
