"""Course UNet vs diffusers' UNet2DConditionModel: forward time on CPU.

SD v1 layout at reduced width (block channels 64/128/256/256, cross-attention
768, 8 heads, 2 layers per block), a 32×32 latent, batch 2, a 77-token
condition, 2 threads. Both models carry the same random weights (converted with
``from_diffusers``) and are timed in alternating order, median of 5 runs.
ratio = diffusers time / course time (> 1: the course model is faster).
Prints one JSON object and writes it to benchmarks/results/unet.json.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from course_lib.unet import UNetConfig, count_parameters, diffusers_config, from_diffusers  # noqa: E402


def main(repeats: int = 5, threads: int = 2) -> dict:
    from diffusers import UNet2DConditionModel

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = UNetConfig(block_out_channels=(64, 128, 256, 256), cross_attention_dim=768, num_heads=8)
    ref = UNet2DConditionModel(**diffusers_config(cfg)).eval()
    ours = from_diffusers(ref).eval()
    x = torch.randn(2, 4, 32, 32)
    t = torch.tensor([999, 10])
    cond = torch.randn(2, 77, 768)

    def run_ref():
        return ref(x, t, cond).sample

    def run_ours():
        return ours(x, t, cond)

    with torch.inference_mode():
        max_err = (run_ref() - run_ours()).abs().max().item()  # also a warm-up for both
        times = {"course": [], "diffusers": []}
        for i in range(repeats):
            order = [("course", run_ours), ("diffusers", run_ref)]
            for name, fn in order if i % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "benchmark": "unet_forward",
        "config": "SD v1 layout, block channels 64/128/256/256, cross-attention 768, 8 heads, "
                  "2 layers per block, latent 32x32, batch 2, 77 condition tokens, fp32, CPU",
        "threads": threads, "repeats": repeats, "parameters": count_parameters(ours),
        "course_s": round(med["course"], 4), "diffusers_s": round(med["diffusers"], 4),
        "course_all_s": [round(v, 4) for v in times["course"]],
        "diffusers_all_s": [round(v, 4) for v in times["diffusers"]],
        "ratio": round(med["diffusers"] / med["course"], 3),
        "max_abs_diff": max_err,
        "torch": torch.__version__,
        "notes": NOTES,
    }
    return result


NOTES = ("Same weights and the same arithmetic; both call PyTorch's fused SDPA kernel for attention, so "
         "the convolutions and attention kernels cost the same. The difference is the glue around them, "
         "found by reading both forward passes (not ablated one change at a time): diffusers divides every "
         "ResnetBlock2D output by output_scale_factor (=1.0) and every attention output by "
         "rescale_output_factor (=1.0), i.e. full extra passes over the feature maps; its Transformer2DModel "
         "makes an extra .contiguous() NCHW copy around the 1x1-conv proj_out, where the course model applies "
         "proj_in/proj_out as one matmul on the token layout; and each attention call goes through the "
         "processor dispatch (mask preparation, dtype casts, shape bookkeeping). "
         "Timed on a shared 2-core machine under heavy load, so individual runs are noisy; the alternating "
         "order and the median of 5 limit that.")


if __name__ == "__main__":
    res = main()
    text = json.dumps(res, indent=1)
    print(text)
    out = Path(__file__).resolve().parent / "results" / "unet.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    sys.exit(0)
