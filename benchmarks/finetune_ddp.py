"""Benchmark: LoRA fine-tuning in 2 DDP processes (gloo, CPU) against 1 process, same global batch.

``course-finetune-lora`` on the offline tiny GPT (``zoo:tiny-gpt``, context 128) and the
Python corpus at the seed configuration (r = 32, lr 1e-4, 32 sequences per step), for
``STEPS`` steps. Both runs get the same CPU budget: 1 process with ``THREADS`` threads,
or 2 processes (``torchrun --nproc_per_node 2``) with ``THREADS / 2`` threads each,
each computing half of every batch; gradients are averaged by gloo's all-reduce once
per step. For reference, one process also runs with ``THREADS / 2`` threads (how well
one process uses the cores it is given). The time is the training loop's (``finetune.json``: ``seconds``), without
process start and model loading. The two adapters must agree to float rounding.
The machine's load average is recorded before and after: other work on the same
cores distorts the times.

Prints one JSON object and writes it to ``benchmarks/results/finetune_ddp.json``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

STEPS, THREADS = 20, 2
ARGS = ["--steps", str(STEPS), "--eval-every", str(STEPS), "--save-every", str(STEPS), "--device", "cpu",
        "--no-progress"]


def run(out: Path, processes: int, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
                if processes > 1 else [sys.executable])
    subprocess.run([*launcher, "-m", "course_lib.cli.finetune_lora", "--out", str(out), *ARGS], env=env,
                   check=True, capture_output=True)
    return json.loads((out / "finetune.json").read_text())


def main() -> None:
    from course_lib import zoo

    zoo.load("tiny-gpt")  # trained and cached once, outside the timings
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        one, two = run(Path(tmp) / "one", 1, THREADS), run(Path(tmp) / "two", 2, THREADS // 2)
        one_thread = run(Path(tmp) / "one_thread", 1, THREADS // 2)
        a, b = load_file(Path(tmp) / "one" / "adapter_model.safetensors"), load_file(
            Path(tmp) / "two" / "adapter_model.safetensors")
        max_diff = max((a[k] - b[k]).abs().max().item() for k in a)
    res = {
        "benchmark": "finetune_ddp",
        "setup": {"model": "zoo:tiny-gpt", "data": "corpus:python", "steps": STEPS, "batch_size": 32,
                  "context": one["recipe"]["effective_context"], "lora_rank": 32, "cpu_threads_in_all": THREADS},
        "one_process": {"seconds": one["seconds"], "seconds_per_step": round(one["seconds"] / STEPS, 4)},
        "two_processes": {"seconds": two["seconds"], "seconds_per_step": round(two["seconds"] / STEPS, 4),
                          "accumulation_steps": two["accumulation_steps"]},
        "speedup": round(one["seconds"] / two["seconds"], 3),
        # the same 1-process run on half the threads: how well one process uses THREADS cores here
        "one_process_half_the_threads": {"seconds": one_thread["seconds"],
                                         "seconds_per_step": round(one_thread["seconds"] / STEPS, 4)},
        "adapter_max_abs_difference": max_diff,
        "final_train_loss": {"one": one["history"]["train_loss"][-1], "two": two["history"]["train_loss"][-1]},
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
    }
    text = json.dumps(res, indent=1)
    print(text)
    out = Path(__file__).resolve().parent / "results" / "finetune_ddp.json"
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
