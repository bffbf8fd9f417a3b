"""Prompt faithfulness and inpainting quality of the offline Stable Diffusion (zoo "shapes-ldm").

The judge is a small CNN trained on *real* ``make_shapes`` images to name the
colour and the kind of the shape. Two measurements:

* ``text_to_image``: 240 samples (16 for each of the 15 colour × kind prompts
  "a <colour> <kind>"), guidance 5, 50 DDIM steps. Pass: ≥ 85% have colour and
  kind both right.
* ``inpainting``: 120 real shapes images whose shape is covered by a mask are
  inpainted with a prompt naming another colour and kind (guidance 5, 50 DDIM
  steps). Kept region: MSE to the original over the unmasked pixels, after
  decoding, ≤ 0.01 (in [-1, 1] units). Prompted shape in the mask: the judge names
  the prompted colour and kind and ≥ 90% of the foreground pixels lie inside the
  mask; bar: ≥ 80% of the images. Measured for both methods, "blend" and "repaint";
  the bar counts as met when a method meets both of its parts.
  The mask ("room", see ``shape_masks``) is a square around the old shape that
  any kind of the same size fits in. The old shape's bounding box grown by 2
  pixels ("bbox") is also reported: it is too tight for some changes of kind (a
  circle is taller than a triangle of the same radius), so it is not the bar.

``run() -> dict``; run directly it prints the JSON. The stored result is the
``shapes`` section of ``benchmarks/results/quality.json``, written by
``benchmarks/quality.py``.
"""

from __future__ import annotations

import json
import time

import torch
import torch.nn.functional as F
from torch import nn


class ShapeJudge(nn.Module):
    """Conv net: image [B, 3, 32, 32] -> (colour logits [B, 5], kind logits [B, 3])."""

    def __init__(self, n_colors: int, n_kinds: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 16×16
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 8×8
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.color = nn.Linear(64, n_colors)
        self.kind = nn.Linear(64, n_kinds)

    def forward(self, x):
        h = self.features(x)
        return self.color(h), self.kind(h)


def train_judge(n: int = 4000, steps: int = 400, seed: int = 100):
    """Train the judge on real shapes; returns (judge, held-out joint accuracy)."""
    from course_lib.data import SHAPE_COLORS, SHAPE_KINDS, make_shapes

    torch.manual_seed(seed)
    x, _, lab = make_shapes(n, seed=seed, return_labels=True)
    xt, _, lt = make_shapes(1000, seed=seed + 1, return_labels=True)
    judge = ShapeJudge(len(SHAPE_COLORS), len(SHAPE_KINDS))
    opt = torch.optim.Adam(judge.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(0, n, (64,), generator=g)
        xb = x[i] + 0.05 * torch.randn(x[i].shape, generator=g)  # a little noise: robust to decoder blur
        c, k = judge(xb)
        loss = F.cross_entropy(c, lab["color"][i]) + F.cross_entropy(k, lab["kind"][i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    judge.eval()
    c, k = classify(judge, xt)
    return judge, ((c == lt["color"]) & (k == lt["kind"])).float().mean().item()


@torch.no_grad()
def classify(judge, images):
    c, k = judge(images.float().cpu())
    return c.argmax(1), k.argmax(1)


def text_to_image(ldm, judge, per_prompt: int = 16, guidance_scale: float = 5.0, n_steps: int = 50,
                  seed: int = 0) -> dict:
    from course_lib.data import SHAPE_COLORS, SHAPE_KINDS

    combos = [(c, k) for c in range(len(SHAPE_COLORS)) for k in range(len(SHAPE_KINDS))]
    colors = torch.tensor([c for c, _ in combos]).repeat_interleave(per_prompt)
    kinds = torch.tensor([k for _, k in combos]).repeat_interleave(per_prompt)
    prompts = [f"a {SHAPE_COLORS[c]} {SHAPE_KINDS[k]}" for c, k in zip(colors.tolist(), kinds.tolist())]
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    images = torch.cat([ldm.sample(prompts[i:i + 80], guidance_scale=guidance_scale, n_steps=n_steps, generator=g)
                        for i in range(0, len(prompts), 80)])
    seconds = time.perf_counter() - start
    c, k = classify(judge, images)
    both = ((c == colors) & (k == kinds)).float().mean().item()
    return {
        "n_samples": len(prompts), "guidance_scale": guidance_scale, "ddim_steps": n_steps,
        "colour_accuracy": round((c == colors).float().mean().item(), 4),
        "kind_accuracy": round((k == kinds).float().mean().item(), 4),
        "both_right": round(both, 4), "threshold": 0.85, "pass": both >= 0.85,
        "sample_seconds": round(seconds, 1),
    }


MASKS = ("room", "bbox")


def shape_masks(lab: dict, how: str = "room", size: int = 32) -> torch.Tensor:
    """Masks [N, 1, size, size] over the shapes of ``make_shapes(..., return_labels=True)``.

    "room": a square centred on the shape with half-side 1.2 r + 2 pixels. Every kind
    of radius r fits inside it (the triangle's circumradius is 1.2 r, the circle's
    radius r, the square's half-side 0.85 r), so asking for another kind of the same
    size is a fair request. "bbox": the old shape's bounding box grown by 2 pixels;
    tight for a change of kind (a circle of radius r is taller than a triangle's box).
    """
    if how not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, got {how!r}")
    if how == "bbox":  # x1, y1 exclusive, plus the margin
        boxes = [(x0 - 2, y0 - 2, x1 + 2, y1 + 2) for x0, y0, x1, y1 in lab["bbox"].tolist()]
    else:
        half = 1.2 * lab["radius"] + 2  # [N]
        cx, cy = lab["center"].T  # [N] each
        boxes = torch.stack([cx - half, cy - half, cx + half, cy + half], 1).round().long().tolist()
    mask = torch.zeros(len(boxes), 1, size, size)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        mask[i, :, max(y0, 0):y1, max(x0, 0):x1] = 1
    return mask


def inpainting(ldm, judge, method: str, n: int = 120, guidance_scale: float = 5.0, n_steps: int = 50,
               seed: int = 7, mask: str = "room") -> dict:
    from course_lib.data import SHAPE_BACKGROUND, SHAPE_COLORS, SHAPE_KINDS, make_shapes

    x, _, lab = make_shapes(n, seed=seed, return_labels=True)
    mask_name, mask = mask, shape_masks(lab, mask)
    # ask for another colour and another kind than the one that was there
    colors = (lab["color"] + 1 + torch.arange(n) % (len(SHAPE_COLORS) - 1)) % len(SHAPE_COLORS)
    kinds = (lab["kind"] + 1 + torch.arange(n) % (len(SHAPE_KINDS) - 1)) % len(SHAPE_KINDS)
    prompts = [f"a {SHAPE_COLORS[c]} {SHAPE_KINDS[k]}" for c, k in zip(colors.tolist(), kinds.tolist())]
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    out = torch.cat([ldm.inpaint(x[i:i + 30], mask[i:i + 30], prompts[i:i + 30], method=method,
                                 guidance_scale=guidance_scale, n_steps=n_steps, generator=g).clamp(-1, 1)
                     for i in range(0, n, 30)])
    seconds = time.perf_counter() - start
    keep = 1 - mask
    mse_kept = (((out - x) ** 2) * keep).sum() / (keep.sum() * 3)
    c, k = classify(judge, out)
    bg = torch.tensor(SHAPE_BACKGROUND)[:, None, None] * 2 - 1
    fg = ((out - bg).abs().amax(1, keepdim=True) > 0.3).float()  # [n, 1, H, W] non-background pixels
    inside = (fg * mask).sum((1, 2, 3)) / fg.sum((1, 2, 3)).clamp(min=1)
    ok = (c == colors) & (k == kinds) & (inside >= 0.9) & (fg.sum((1, 2, 3)) > 0)
    return {
        "method": method, "mask": mask_name, "n_images": n, "guidance_scale": guidance_scale, "ddim_steps": n_steps,
        "mse_unmasked": round(mse_kept.item(), 5), "mse_threshold": 0.01, "mse_pass": mse_kept.item() <= 0.01,
        "prompted_shape_in_mask": round(ok.float().mean().item(), 4),
        "colour_and_kind_right": round(((c == colors) & (k == kinds)).float().mean().item(), 4),
        "in_mask_threshold": 0.8, "in_mask_pass": ok.float().mean().item() >= 0.8,
        "sample_seconds": round(seconds, 1),
    }


def run() -> dict:
    from course_lib.zoo import load

    start = time.perf_counter()
    ldm = load("shapes-ldm")
    load_seconds = time.perf_counter() - start
    judge, judge_acc = train_judge()
    t2i = text_to_image(ldm, judge)
    inpaint = {}  # "inpainting_blend", "inpainting_repaint" (room masks: the bar), then the bbox-mask runs
    for mask in MASKS:
        for method in ("blend", "repaint"):
            name = f"inpainting_{method}" if mask == "room" else f"inpainting_{method}_{mask}_mask"
            inpaint[name] = inpainting(ldm, judge, method, mask=mask)
    meets = [r["method"] for r in inpaint.values() if r["mask"] == "room" and r["mse_pass"] and r["in_mask_pass"]]
    return {
        "model": "shapes-ldm", "load_or_train_seconds": round(load_seconds, 1),
        "train_seconds": getattr(ldm, "train_seconds", None),
        "judge": "CNN on real make_shapes images", "judge_held_out_both_right": round(judge_acc, 4),
        "text_to_image": t2i, **inpaint,
        "inpainting_methods_meeting_the_bar": meets,
        "pass": bool(t2i["pass"] and meets),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
