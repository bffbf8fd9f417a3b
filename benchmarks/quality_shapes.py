"""How faithful the offline Stable Diffusion (zoo "shapes-vae" + "shapes-ldm") is, by two judges.

* The **strict judge** (``benchmarks/shapes_judge.py``): rules a careful person applies —
  the shape segmented from the background, its colour from its core, its kind from how
  closely its outline follows ``make_shapes``'s polygon of that kind and from its
  convexity, its position and size by the caption rules. A malformed shape (pinched,
  lumpy, hollow, in pieces) has no kind. This is the judge the bars use.
* The **CNN judge** (``ShapeJudge`` below): a small conv net trained on real pictures
  to name colour and kind. It forgives malformed shapes (it was never shown one), so
  it is reported beside the strict judge, not used for the bars.

Sections of ``run()`` (each with its bar and ``pass``):

* ``judges``: both judges on held-out real pictures, sharp and blurred (their own accuracy).
* ``reconstruction``: 240 real pictures through the VAE: colour and kind kept ≥ 98%;
  the mean solidity per kind is the ceiling the LDM's decoder allows.
* ``text_to_image``: 240 samples "a <colour> <kind>" (16 per prompt), guidance 5, 50
  DDIM steps: colour and kind both right ≥ 92%; per kind, mean solidity within 0.03
  of the reconstructions'.
* ``positions``: 240 samples "a <colour> <kind> <position>" (48 per position): the
  shape's centroid in the named place (``position_phrase``) ≥ 85%.
* ``sizes``: 240 samples "a <size> <colour> <kind>": the radius the area implies in
  the named ``SHAPE_RADIUS`` range ≥ 95%.
* ``image_to_image``: 120 real pictures, each with a prompt naming another colour and
  kind, SDEdit at strengths 0.1 … 1.0: at strength ≤ 0.3 the picture's own colour and
  kind are kept ≥ 85%, at ≥ 0.8 the prompt's win ≥ 85%, and the curves are monotone in
  between (0.3 … 0.8, the issue's bar; monotone over all strengths is reported too).
* ``inpainting``: 120 real pictures, the shape under a square mask with room for any
  kind ("room", see ``shape_masks``), a prompt naming another colour and kind; blend
  and RePaint on the same pictures, masks and seeds: the prompted colour and kind by
  the strict judge with the shape inside the mask, MSE outside the mask (decoded,
  [-1, 1] units), and time. Bars as before: MSE ≤ 0.01 and ≥ 80% right.
* ``cross_attention``: for the colour, kind and position word of 120 prompts "a <colour>
  <kind> <position>", how much more each is attended on the drawn shape than off it —
  averaged over heads and layers, and in the one head per kind of word chosen on 60
  other prompts (``cross_attention``): median ≥ 1.5.

``run() -> dict``; run directly it prints the JSON. The stored result is the
``shapes`` section of ``benchmarks/results/quality.json``, written by
``benchmarks/quality.py``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.data.shapes import SHAPE_COLORS, SHAPE_KINDS, SHAPE_POSITIONS, SHAPE_SIZES, make_shapes


def _strict_judge_module():
    """benchmarks/shapes_judge.py as a module (benchmarks/ is not a package)."""
    if "shapes_judge" not in sys.modules:
        spec = importlib.util.spec_from_file_location("shapes_judge", Path(__file__).with_name("shapes_judge.py"))
        module = sys.modules["shapes_judge"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules["shapes_judge"]


sj = _strict_judge_module()
STRENGTHS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
BATCH = 80  # pictures per sampling call


# ---------------------------------------------------------------------------------- the CNN judge

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


def train_cnn_judge(n: int = 4000, steps: int = 400, seed: int = 100) -> ShapeJudge:
    """Train the CNN judge on real shapes (with a little noise, so decoder blur does not throw it)."""
    from course_lib.device import seeded

    x, _, lab = make_shapes(n, seed=seed, return_labels=True)
    with seeded(seed):
        judge = ShapeJudge(len(SHAPE_COLORS), len(SHAPE_KINDS))
    opt = torch.optim.Adam(judge.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(0, n, (64,), generator=g)
        xb = x[i] + 0.05 * torch.randn(x[i].shape, generator=g)
        c, k = judge(xb)
        loss = F.cross_entropy(c, lab["color"][i]) + F.cross_entropy(k, lab["kind"][i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return judge.eval()


@torch.no_grad()
def cnn_classify(judge: ShapeJudge, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c, k = judge(images.float().cpu())
    return c.argmax(1), k.argmax(1)


class Judges:
    """The strict judge and the CNN judge, read side by side."""

    def __init__(self):
        self.strict = sj.ShapesJudge.fitted()
        self.cnn = train_cnn_judge()

    def read(self, images: torch.Tensor, colors, kinds, positions=None, sizes=None) -> dict:
        """Scores of both judges for pictures [N, 3, 32, 32] asked to show these attributes."""
        readings = self.strict.read(images)
        strict = sj.score(readings, colors=colors, kinds=kinds, positions=positions, sizes=sizes)
        c, k = cnn_classify(self.cnn, images)
        colors, kinds = torch.as_tensor(_indices(colors, SHAPE_COLORS)), torch.as_tensor(_indices(kinds, SHAPE_KINDS))
        cnn = {"colour": _mean(c == colors), "kind": _mean(k == kinds), "both": _mean((c == colors) & (k == kinds))}
        return {"strict": strict, "cnn": cnn, "readings": readings}


def _indices(values, names) -> list[int]:
    return [names.index(v) if isinstance(v, str) else int(v) for v in values]


def _mean(x: torch.Tensor) -> float:
    return round(x.float().mean().item(), 4)


def _public(result: dict) -> dict:
    """A judge result without the per-picture readings (for the JSON)."""
    return {k: v for k, v in result.items() if k != "readings"}


def judges_on_real(judges: Judges, n: int = 240, seed: int = 31) -> dict:
    """Each judge on held-out real pictures, sharp and blurred (σ = 0.75 px): how far it can be trusted."""
    x, _, lab = make_shapes(n, seed=seed, return_labels=True)
    out = {}
    for name, pictures in (("sharp", x), ("blurred", sj.blur(x, 0.75))):
        r = judges.read(pictures, lab["color"], lab["kind"], lab["position"], lab["big"].long())
        out[name] = {"strict": r["strict"], "cnn": r["cnn"]}
    return {"n_images": n, **out, "strict_thresholds": vars(judges.strict.thresholds)}


# ---------------------------------------------------------------------------------- the measurements

def _sample(ldm, prompts: list[str], seed: int, **kw) -> tuple[torch.Tensor, float]:
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    images = torch.cat([ldm.sample(prompts[i:i + BATCH], generator=g, **kw) for i in range(0, len(prompts), BATCH)])
    return images.cpu(), round(time.perf_counter() - start, 1)


def reconstruction(vae, judges: Judges, n: int = 240, seed: int = 11) -> dict:
    x, _, lab = make_shapes(n, seed=seed, return_labels=True)
    with torch.no_grad():
        device = next(vae.parameters()).device
        rec = torch.cat([vae.decode(vae.encode(x[i:i + BATCH].to(device)).mean) for i in range(0, n, BATCH)])
    rec = rec.clamp(-1, 1).cpu()
    r = judges.read(rec, lab["color"], lab["kind"], lab["position"], lab["big"].long())
    both = r["strict"]["both"]
    return {"n_images": n, "mse": round(F.mse_loss(rec, x).item(), 5), **_public(r),
            "threshold": 0.98, "pass": both >= 0.98}


def text_to_image(ldm, judges: Judges, ceiling: dict, per_prompt: int = 16, guidance_scale: float = 5.0,
                  n_steps: int = 50, seed: int = 0) -> dict:
    combos = [(c, k) for c in SHAPE_COLORS for k in SHAPE_KINDS for _ in range(per_prompt)]
    prompts = [f"a {c} {k}" for c, k in combos]
    images, seconds = _sample(ldm, prompts, seed, guidance_scale=guidance_scale, n_steps=n_steps)
    r = judges.read(images, [c for c, _ in combos], [k for _, k in combos])
    solidity = r["strict"]["mean_solidity"]
    gaps = {k: round(abs(solidity[k] - ceiling[k]), 4) for k in SHAPE_KINDS}
    both = r["strict"]["both"]
    return {"n_samples": len(prompts), "guidance_scale": guidance_scale, "ddim_steps": n_steps, **_public(r),
            "solidity_of_reconstructions": ceiling, "solidity_gap": gaps,
            "threshold": 0.92, "solidity_gap_threshold": 0.03,
            "pass": both >= 0.92 and max(gaps.values()) <= 0.03, "sample_seconds": seconds}


def positions(ldm, judges: Judges, n: int = 240, guidance_scale: float = 5.0, n_steps: int = 50,
              seed: int = 1) -> dict:
    asked = [(SHAPE_COLORS[i % 5], SHAPE_KINDS[(i // 5) % 3], SHAPE_POSITIONS[(i // 15) % 5]) for i in range(n)]
    prompts = [f"a {c} {k} {p}" for c, k, p in asked]
    images, seconds = _sample(ldm, prompts, seed, guidance_scale=guidance_scale, n_steps=n_steps)
    r = judges.read(images, [a[0] for a in asked], [a[1] for a in asked], [a[2] for a in asked])
    per_place = {}
    for p in SHAPE_POSITIONS:
        landed = [rd.position == p for rd, a in zip(r["readings"], asked) if a[2] == p]
        per_place[p] = round(sum(landed) / max(len(landed), 1), 4)
    right = r["strict"]["position"]
    return {"n_samples": n, **_public(r), "position_per_phrase": per_place,
            "threshold": 0.85, "pass": right >= 0.85, "sample_seconds": seconds}


def sizes(ldm, judges: Judges, n: int = 240, guidance_scale: float = 5.0, n_steps: int = 50, seed: int = 2) -> dict:
    asked = [(SHAPE_SIZES[i % 2], SHAPE_COLORS[(i // 2) % 5], SHAPE_KINDS[(i // 10) % 3]) for i in range(n)]
    prompts = [f"a {z} {c} {k}" for z, c, k in asked]
    images, seconds = _sample(ldm, prompts, seed, guidance_scale=guidance_scale, n_steps=n_steps)
    r = judges.read(images, [a[1] for a in asked], [a[2] for a in asked], sizes=[a[0] for a in asked])
    right = r["strict"]["size"]
    return {"n_samples": n, **_public(r), "threshold": 0.95, "pass": right >= 0.95, "sample_seconds": seconds}


ROLES = ("colour", "kind", "position")


def paint_mask(images: torch.Tensor) -> torch.Tensor:
    """The judge's "paint" (step 1 of ``shapes_judge``): pixels [N, H, W] far from the background."""
    bg = torch.tensor(sj.SHAPE_BACKGROUND)[:, None, None]  # [3, 1, 1] in [0, 1]
    return ((images + 1) / 2 - bg).norm(dim=1) > sj.FOREGROUND


def _attention_run(ldm, n: int, offset: int, seed: int, guidance_scale: float, n_steps: int):
    """n position prompts, their samples' paint masks and every head's maps; the words of each role."""
    asked = [(SHAPE_COLORS[i % 5], SHAPE_KINDS[(i // 5) % 3], SHAPE_POSITIONS[(i // 15) % 5])
             for i in range(offset, offset + n)]
    result = ldm.text_to_image([f"a {c} {k} {p}" for c, k, p in asked], guidance_scale=guidance_scale,
                               n_steps=n_steps, generator=torch.Generator().manual_seed(seed),
                               record_attention="heads")
    words = [dict(zip(ROLES, (c, k, p.split()[-1]))) for c, k, p in asked]  # "on the left" -> "left"
    return result.attention, paint_mask(result.images.clamp(-1, 1).cpu()), words


def _median(values) -> float:
    return round(torch.tensor(values).median().item(), 3)


def cross_attention(ldm, n_probe: int = 60, n: int = 120, guidance_scale: float = 5.0, n_steps: int = 50,
                    seeds=(3, 4)) -> dict:
    """Where the colour, kind and position words are read: inside the drawn shape or not.

    For each word, the contrast of its map (``CrossAttentionMaps.contrast``: mean attention
    on the sample's shape / off it; 1 = no preference). Averaged over heads and layers, and
    for the one head per kind of word that reads it most on the shape: that head is chosen
    on ``n_probe`` prompts and measured on ``n`` other prompts and seeds. Bar (ours, the
    issue sets none): a median contrast ≥ 1.5 for each kind of word.
    """
    att, masks, words = _attention_run(ldm, n_probe, 0, seeds[0], guidance_scale, n_steps)
    per_head = {role: {} for role in ROLES}  # role -> {(layer, head): [contrast per probe prompt]}
    for b, w in enumerate(words):
        for role in ROLES:
            for key, value in att.head_contrasts(b, w[role], masks[b]).items():
                per_head[role].setdefault(key, []).append(value)
    best = {role: max(per_head[role], key=lambda key: _median(per_head[role][key])) for role in ROLES}

    att, masks, words = _attention_run(ldm, n, n_probe, seeds[1], guidance_scale, n_steps)
    out = {"n_probe_prompts": n_probe, "n_prompts": n, "guidance_scale": guidance_scale, "ddim_steps": n_steps}
    for role in ROLES:
        layer, head = best[role]
        averaged = [att.contrast(b, w[role], masks[b]) for b, w in enumerate(words)]
        chosen = [att.contrast(b, w[role], masks[b], layer, head) for b, w in enumerate(words)]
        out[role] = {"averaged_median_contrast": _median(averaged), "layer": layer, "head": head,
                     "head_median_contrast": _median(chosen),
                     "head_share_above_1": round(sum(c > 1 for c in chosen) / len(chosen), 3)}
    out["threshold"] = 1.5
    out["pass"] = all(out[role]["head_median_contrast"] >= 1.5 for role in ROLES)
    return out


def _other_prompts(lab: dict) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """For each picture another colour and another kind (cycling through the others), and the prompt."""
    n = len(lab["color"])
    colors = (lab["color"] + 1 + torch.arange(n) % (len(SHAPE_COLORS) - 1)) % len(SHAPE_COLORS)
    kinds = (lab["kind"] + 1 + torch.arange(n) % (len(SHAPE_KINDS) - 1)) % len(SHAPE_KINDS)
    return colors, kinds, [f"a {SHAPE_COLORS[c]} {SHAPE_KINDS[k]}" for c, k in zip(colors.tolist(), kinds.tolist())]


def _monotone(values: list[float], increasing: bool) -> bool:
    pairs = list(zip(values, values[1:]))
    return all(b >= a for a, b in pairs) if increasing else all(b <= a for a, b in pairs)


def image_to_image(ldm, judges: Judges, n: int = 120, strengths=STRENGTHS, guidance_scale: float = 5.0,
                   n_steps: int = 50, seed: int = 5) -> dict:
    x, _, lab = make_shapes(n, seed=seed, return_labels=True)
    colors, kinds, prompts = _other_prompts(lab)
    curve, start = [], time.perf_counter()
    for strength in strengths:
        g = torch.Generator().manual_seed(seed)
        out = torch.cat([ldm.image_to_image(x[i:i + BATCH], prompts[i:i + BATCH], strength=strength,
                                            guidance_scale=guidance_scale, n_steps=n_steps, generator=g)
                         for i in range(0, n, BATCH)]).clamp(-1, 1).cpu()
        kept = judges.read(out, lab["color"], lab["kind"])
        prompted = judges.read(out, colors, kinds)
        curve.append({"strength": strength, "kept_strict": kept["strict"]["both"],
                      "prompt_strict": prompted["strict"]["both"], "kept_cnn": kept["cnn"]["both"],
                      "prompt_cnn": prompted["cnn"]["both"], "clean_strict": kept["strict"]["clean"]})
    low = [c["kept_strict"] for c in curve if c["strength"] <= 0.3]
    high = [c["prompt_strict"] for c in curve if c["strength"] >= 0.8]
    between = [c for c in curve if 0.3 <= c["strength"] <= 0.8]  # the transition the bar asks to be monotone
    kept_between = _monotone([c["kept_strict"] for c in between], increasing=False)
    prompt_between = _monotone([c["prompt_strict"] for c in between], increasing=True)
    low, high = min(low, default=0.0), min(high, default=0.0)  # no strength in a range: that bar is not met
    ok = low >= 0.85 and high >= 0.85 and kept_between and prompt_between
    return {"n_images": n, "guidance_scale": guidance_scale, "ddim_steps": n_steps, "curve": curve,
            "kept_at_low_strength_min": low, "prompt_at_high_strength_min": high,
            "kept_monotone_0.3_to_0.8": kept_between, "prompt_monotone_0.3_to_0.8": prompt_between,
            "kept_monotone_everywhere": _monotone([c["kept_strict"] for c in curve], increasing=False),
            "prompt_monotone_everywhere": _monotone([c["prompt_strict"] for c in curve], increasing=True),
            "threshold": 0.85, "pass": ok, "seconds": round(time.perf_counter() - start, 1)}


def shape_masks(lab: dict, size: int = 32) -> torch.Tensor:
    """Masks [N, 1, size, size]: a square centred on each shape with half-side 1.2 r + 2 pixels.

    Every kind of radius r fits inside it (the triangle's circumradius is 1.2 r, the
    circle's radius r, the square's half-side 0.85 r), so asking for another kind of
    the same size is a fair request.
    """
    half = 1.2 * lab["radius"] + 2  # [N]
    cx, cy = lab["center"].T  # [N] each
    boxes = torch.stack([cx - half, cy - half, cx + half, cy + half], 1).round().long().tolist()
    mask = torch.zeros(len(boxes), 1, size, size)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        mask[i, :, max(y0, 0):y1, max(x0, 0):x1] = 1
    return mask


def inpainting(ldm, judges: Judges, method: str, n: int = 120, guidance_scale: float = 5.0, n_steps: int = 50,
               seed: int = 7) -> dict:
    from course_lib.data.shapes import SHAPE_BACKGROUND

    x, _, lab = make_shapes(n, seed=seed, return_labels=True)
    mask = shape_masks(lab)
    colors, kinds, prompts = _other_prompts(lab)
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    out = torch.cat([ldm.inpaint(x[i:i + BATCH], mask[i:i + BATCH], prompts[i:i + BATCH], method=method,
                                 guidance_scale=guidance_scale, n_steps=n_steps, generator=g)
                     for i in range(0, n, BATCH)]).clamp(-1, 1).cpu()
    seconds = time.perf_counter() - start
    keep = 1 - mask
    mse_kept = ((((out - x) ** 2) * keep).sum() / (keep.sum() * 3)).item()
    r = judges.read(out, colors, kinds)
    bg = torch.tensor(SHAPE_BACKGROUND)[:, None, None] * 2 - 1
    fg = ((out - bg).abs().amax(1, keepdim=True) > 0.3).float()  # [n, 1, H, W] non-background pixels
    inside = (fg * mask).sum((1, 2, 3)) / fg.sum((1, 2, 3)).clamp(min=1)
    right = torch.tensor([rd.color == SHAPE_COLORS[c] and rd.kind == SHAPE_KINDS[k]
                          for rd, c, k in zip(r["readings"], colors.tolist(), kinds.tolist())])
    ok = right & (inside >= 0.9) & (fg.sum((1, 2, 3)) > 0)
    return {"method": method, "n_images": n, "guidance_scale": guidance_scale, "ddim_steps": n_steps,
            "mse_unmasked": round(mse_kept, 5), "mse_threshold": 0.01, "mse_pass": mse_kept <= 0.01,
            **_public(r), "prompted_shape_in_mask": _mean(ok), "in_mask_threshold": 0.8,
            "in_mask_pass": _mean(ok) >= 0.8, "sample_seconds": round(seconds, 1)}


def run() -> dict:
    from course_lib.zoo import load

    start = time.perf_counter()
    vae = load("shapes-vae")
    ldm = load("shapes-ldm")
    load_seconds = time.perf_counter() - start
    judges = Judges()
    result = {"model": "shapes-ldm", "load_or_train_seconds": round(load_seconds, 1),
              "train_seconds": {"shapes-vae": vae.train_seconds, "shapes-ldm": ldm.train_seconds},
              "judges": judges_on_real(judges)}
    rec = reconstruction(vae, judges)
    result["reconstruction"] = rec
    result["text_to_image"] = text_to_image(ldm, judges, rec["strict"]["mean_solidity"])
    result["positions"] = positions(ldm, judges)
    result["sizes"] = sizes(ldm, judges)
    result["image_to_image"] = image_to_image(ldm, judges)
    result["inpainting"] = {m: inpainting(ldm, judges, m) for m in ("blend", "repaint")}
    result["cross_attention"] = cross_attention(ldm)
    meets = [m for m, r in result["inpainting"].items() if r["mse_pass"] and r["in_mask_pass"]]
    result["inpainting_methods_meeting_the_bar"] = meets
    parts = ("reconstruction", "text_to_image", "positions", "sizes", "image_to_image", "cross_attention")
    result["pass"] = bool(all(result[p]["pass"] for p in parts) and meets)
    return result


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
