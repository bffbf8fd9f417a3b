"""What the three image tools share: their flags, image and mask files, the batched run, the output.

Every image gets a seed: ``--seed`` for the first prompt, ``--seed + i`` for the
i-th. A batch (``--batch-size``) draws its noise from one generator seeded with
the seed of its first image, so with ``--batch-size 1`` (the default) each image
is reproduced by its prompt and seed alone. Each image is written as
``<out>/<prompt>-seed<N>.png`` next to ``<prompt>-seed<N>.json``, the settings
that made it.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import atomic_write, save_json
from ..checks import check_int
from ..progress import progress_bar
from .common import (add_prompt_flags, add_run_flags, add_zoo_flag, check_free, read_prompts, resolve_device,
                     resolve_dtype, zoo_options)
from .models import default_guidance, load_pipeline

__all__ = ["add_image_flags", "read_image", "read_mask", "run_image_tool"]


def add_image_flags(parser: argparse.ArgumentParser, size_help: str) -> None:
    """The flags of every image tool (the tools add their own inputs)."""
    add_prompt_flags(parser, "what to draw")
    parser.add_argument("--checkpoint", default="zoo:shapes-ldm",
                        help="zoo:shapes-ldm (offline, 32x32 shapes), a Stable Diffusion hub id "
                             "(e.g. stable-diffusion-v1-5/stable-diffusion-v1-5) or a local diffusers folder")
    parser.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm"], help="the reverse process")
    parser.add_argument("--steps", type=int, default=50, help="denoising steps")
    parser.add_argument("--eta", type=float, default=None,
                        help="DDIM's η: 0 deterministic, 1 as noisy as DDPM (default: the method's own, 0 "
                             "except for inpainting with repaint, 1)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="classifier-free guidance scale (default: 7.5 for Stable Diffusion, 5.0 for "
                             "zoo:shapes-ldm)")
    parser.add_argument("--height", type=int, default=None, help=size_help)
    parser.add_argument("--width", type=int, default=None, help=size_help)
    parser.add_argument("--batch-size", type=int, default=1, help="images per sampling call")
    parser.add_argument("--out", type=Path, default=Path("outputs"), help="folder for the PNG and JSON files")
    add_run_flags(parser, seed_help="seed of the first image; image i gets seed + i")
    add_zoo_flag(parser)


def read_image(path: Path, size: tuple[int | None, int | None] = (None, None)) -> torch.Tensor:
    """An image file as ``[1, 3, H, W]`` in [-1, 1]; resized (Lanczos) when ``size`` (height, width) is given."""
    from PIL import Image

    if not Path(path).is_file():
        raise FileNotFoundError(f"--image {path}: no such file")
    with Image.open(path) as img:
        img = _resized(img.convert("RGB"), size, Image.Resampling.LANCZOS)
        pixels = torch.from_numpy(np.asarray(img, dtype=np.float32))  # [H, W, 3] in [0, 255]
    return (pixels / 127.5 - 1.0).permute(2, 0, 1)[None]  # [1, 3, H, W]


def read_mask(path: Path, image: torch.Tensor, size: tuple[int | None, int | None] = (None, None)) -> torch.Tensor:
    """A mask file as ``[1, 1, H, W]``: 1 where it is white (repaint), 0 where it is black (keep).

    Resized (nearest) when ``size`` is given, as the image was; then it must be the image's size.
    """
    from PIL import Image

    if not Path(path).is_file():
        raise FileNotFoundError(f"--mask {path}: no such file")
    h, w = image.shape[-2:]
    with Image.open(path) as img:
        grey = _resized(img.convert("L"), size, Image.Resampling.NEAREST)
        if grey.size != (w, h):
            raise ValueError(f"--mask {path} is {grey.size[0]}x{grey.size[1]} but the image is {w}x{h} "
                             f"(width x height): they must be the same size")
        values = torch.from_numpy(np.asarray(grey, dtype=np.float32))  # [H, W] in [0, 255]
    return (values >= 128).float()[None, None]


def _resized(img, size, resample):
    h, w = size
    if h is None and w is None:
        return img
    for name, v in (("--height", h), ("--width", w)):
        if v is not None:
            check_int(name, v, 1)
    return img.resize((w or img.width, h or img.height), resample)


def _stem(prompt: str, seed: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:60].rstrip("-") or "empty"
    return f"{slug}-seed{seed}"


def _write_png(path: Path, image: torch.Tensor) -> None:
    from PIL import Image

    from ..data.images import to_display

    pixels = (to_display(image[None]) * 255).round().astype(np.uint8)[0]  # [H, W, 3]
    atomic_write(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))


def _check_inputs(pipe, prompts: list[str], args: argparse.Namespace, inputs: dict) -> None:
    """What only the model can tell, checked before anything is drawn: the prompts fit its
    text encoder, the image sides are multiples of its autoencoder's factor."""
    pipe.tokenize(prompts)
    f = pipe.factor
    image = inputs.get("pixels")
    if image is not None:
        h, w = image.shape[-2:]
        if h % f or w % f:
            raise ValueError(f"--image {args.image} is {w}x{h} (width x height); {args.checkpoint} needs sides "
                             f"that are multiples of {f} (its autoencoder's factor): crop it or give "
                             f"--height/--width")
    for flag, side in (("--height", args.height), ("--width", args.width)):
        if side is not None and (side < f or side % f):
            raise ValueError(f"{flag} {side}: {args.checkpoint} needs a positive multiple of {f} "
                             f"(its autoencoder's factor)")


def run_image_tool(args: argparse.Namespace, prog: str, sample, inputs: dict | None = None) -> list[Path]:
    """Draw one image per prompt and write them; returns the PNG paths.

    ``sample(pipe, prompts, generator=..., callback=..., **settings) -> images [B, 3, H, W]``
    is the tool's one call into the pipeline. ``inputs``: what the tool read before the
    model loads, recorded in the JSON (``"pixels"``: the input image ``[1, 3, H, W]``, checked, not recorded).
    """
    prompts = read_prompts(args)
    check_int("--batch-size", args.batch_size, 1)
    check_int("--steps", args.steps, 1)
    check_int("--seed", args.seed, 0)
    seeds = [args.seed + i for i in range(len(prompts))]
    stems = [_stem(p, s) for p, s in zip(prompts, seeds)]
    if len(set(stems)) < len(stems):
        raise ValueError("two prompts give the same file name; make them differ in letters or digits")
    check_free([args.out / f"{s}{ext}" for s in stems for ext in (".png", ".json")], args.overwrite)
    device = resolve_device(args.device)
    options = zoo_options(args)
    pipe = load_pipeline(args.checkpoint, device, resolve_dtype(args.dtype), options, not args.no_progress)
    _check_inputs(pipe, prompts, args, inputs or {})
    settings = {"guidance_scale": default_guidance(args.checkpoint) if args.guidance is None else args.guidance,
                "n_steps": args.steps}
    if args.eta is not None:
        settings["eta"] = args.eta
    if args.sampler != "ddim":  # LatentDiffusion's sampler= argument (h1b); DDIM is the default there
        settings["sampler"] = args.sampler
    record = {"tool": prog, "checkpoint": args.checkpoint, "sampler": args.sampler, "eta": args.eta,
              "batch_size": args.batch_size, "device": str(device), "dtype": str(pipe.dtype).replace("torch.", ""),
              "zoo_options": options, **settings, **{k: v for k, v in (inputs or {}).items()
                                                     if not isinstance(v, torch.Tensor)}}
    paths = []
    with progress_bar(len(prompts), prog, disable=args.no_progress) as bar:
        for start in range(0, len(prompts), args.batch_size):
            batch = prompts[start:start + args.batch_size]
            generator = torch.Generator().manual_seed(seeds[start])
            images = sample(pipe, batch, generator=generator,
                            callback=lambda info: bar.update(0, step=info.i + 1), **settings)  # [B, 3, H, W]
            for i, image in enumerate(images.float().cpu()):
                stem = stems[start + i]
                _write_png(args.out / f"{stem}.png", image)
                save_json(args.out / f"{stem}.json", {**record, "prompt": batch[i], "seed": seeds[start + i],
                                                      "height": image.shape[-2], "width": image.shape[-1]})
                paths.append(args.out / f"{stem}.png")
            bar.update(len(batch))
    print(f"{prog}: wrote {len(paths)} image(s) to {args.out}/")
    return paths
