"""Written-out attention vs ``F.scaled_dot_product_attention``: time and peak memory.

    .venv/bin/python benchmarks/attention.py            # prints JSON, writes results/attention.json
    from benchmarks.attention import run; run(lengths=(256, 1024), device="cuda")

For each sequence length T both implementations compute attention (forward
only, no grad) on q, k, v of shape [B, H, T, D] (default B=1, H=8, D=64, fp32):

* ``written_out``: ``course_lib.attention.scaled_dot_product_attention``, which
  materialises the [B, H, T, T] scores and weights;
* ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels;
  on a GPU FlashAttention / memory-efficient attention, which never store T × T).

Time: median of ``repeats`` runs after one warm-up (CUDA: synchronised).
Peak memory: the extra memory one call needs on top of its inputs.
  * CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``,
    minus the memory allocated before the call;
  * CPU: the growth of the process's resident set size during the call, read
    from ``/proc/self/statm`` by a sampling thread (torch computes without the
    GIL, so the thread keeps sampling) and repeated for ≥ 50 ms so short calls
    are seen. (tracemalloc cannot see torch's allocations, and the
    ``ru_maxrss`` high-water mark is already set by ``import torch``.)
    Page-granular, and memory that the C allocator keeps from earlier calls
    is reused without growing the RSS, so small sizes read ~0: compare with
    ``weights_mib``.
``weights_mib`` is the size of one [B, H, T, T] matrix, what the written-out
path must hold at least (it holds scores and weights: about twice that).
"""

from __future__ import annotations

import json
import os
import gc
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from course_lib.attention import scaled_dot_product_attention  # noqa: E402

LENGTHS = (256, 512, 1024, 2048, 4096)
IMPLEMENTATIONS = {
    "written_out": lambda q, k, v: scaled_dot_product_attention(q, k, v)[0],
    "sdpa": lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
}
MIB = 2**20


def _inputs(t, batch, heads, head_dim, device, dtype):
    g = torch.Generator(device="cpu").manual_seed(0)
    return [torch.randn(batch, heads, t, head_dim, generator=g, dtype=torch.float32).to(device, dtype)
            for _ in range(3)]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_ms(fn, device, repeats):
    fn()  # warm-up (kernel selection, allocator)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def _peak_cuda_mib(fn, device):
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / MIB


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:  # Linux: size, resident, ... in pages
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_mib(fn, min_seconds: float = 0.05):
    """Peak growth of this process's resident memory while ``fn`` runs (sampled every 0.2 ms).

    ``fn`` is repeated for at least ``min_seconds`` so short calls are sampled too.
    Returns None where /proc is not available (macOS, Windows).
    """
    if not os.path.exists("/proc/self/statm"):
        return None
    gc.collect()
    base = _rss_bytes()
    peak, done = [base], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.0002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.perf_counter()
    try:
        while True:
            fn()
            if time.perf_counter() - t0 >= min_seconds:
                break
    finally:
        done.set()
        sampler.join()
    return (peak[0] - base) / MIB


def run(lengths=LENGTHS, device=None, batch: int = 1, heads: int = 8, head_dim: int = 64,
        dtype=torch.float32, repeats: int | None = None) -> dict:
    """Benchmark both implementations at each length; return a JSON-ready dict."""
    device = torch.device(device) if device is not None else (
        torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda (peak memory is measured there), got {device}")
    repeats = repeats or (10 if device.type == "cuda" else 3)
    rows = []
    for t in lengths:
        q, k, v = _inputs(t, batch, heads, head_dim, device, dtype)
        row = {"tokens": t, "weights_mib": batch * heads * t * t * q.element_size() / MIB}
        with torch.no_grad():
            ref = IMPLEMENTATIONS["written_out"](q, k, v)
            row["max_abs_difference"] = (ref - IMPLEMENTATIONS["sdpa"](q, k, v)).abs().max().item()
            del ref
            for name, impl in IMPLEMENTATIONS.items():
                row[f"{name}_ms"] = round(_time_ms(lambda: impl(q, k, v), device, repeats), 3)
                if device.type == "cuda":
                    row[f"{name}_peak_mib"] = round(_peak_cuda_mib(lambda: impl(q, k, v), device), 2)
                else:
                    peak = _peak_rss_mib(lambda: impl(q, k, v))
                    row[f"{name}_peak_mib"] = None if peak is None else round(peak, 2)
        row["speedup"] = round(row["written_out_ms"] / row["sdpa_ms"], 2)
        rows.append(row)
        del q, k, v
    return {
        "benchmark": "attention: written out (course_lib) vs F.scaled_dot_product_attention, forward, no grad",
        "shape": {"batch": batch, "heads": heads, "head_dim": head_dim, "dtype": str(dtype)},
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                 f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"),
        "torch": torch.__version__,
        "time_method": f"median of {repeats} runs after 1 warm-up" + (", CUDA-synchronised" if device.type == "cuda" else ""),
        "memory_method": ("torch.cuda.max_memory_allocated minus memory allocated before the call"
                          if device.type == "cuda" else
                          "growth of the resident set size (/proc/self/statm, sampled every 0.2 ms by a "
                          "thread) over its value before the call; page-granular; memory the allocator already "
                          "holds from earlier calls is reused and not counted, so small sizes read ~0; "
                          "None where /proc is missing"),
        "results": rows,
    }


def main():
    result = run()
    text = json.dumps(result, indent=2)
    print(text)
    out = ROOT / "benchmarks" / "results" / "attention.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(text + "\n")
    tmp.replace(out)


if __name__ == "__main__":
    main()
