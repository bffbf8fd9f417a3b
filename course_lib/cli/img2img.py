"""``course-img2img``: an image redrawn after a prompt — SDEdit (Meng et al. 2022;
``LatentDiffusion.image_to_image``): the image is noised ``--strength`` of the way
and denoised from there, so a small strength keeps it, 1 ignores it.

    course-img2img --image photo.png --prompt "a blue circle" --strength 0.6
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..checks import check_probability
from .common import ToolParser, run
from .images import add_image_flags, read_image, run_image_tool

PROG = "course-img2img"


def parser() -> ToolParser:
    p = ToolParser(PROG, __doc__)
    p.add_argument("--image", type=Path, required=True, help="the starting image (any format PIL reads)")
    p.add_argument("--strength", type=float, default=0.6,
                   help="in (0, 1]: how far the image is noised before denoising (1: not at all kept)")
    add_image_flags(p, size_help="resize the image to this side first (default: its own size, which must "
                                 "be a multiple of the autoencoder's factor)")
    return p


def main(argv=None) -> int:
    def body(args):
        check_probability("--strength", args.strength)  # before the model loads
        image = read_image(args.image, (args.height, args.width))  # [1, 3, H, W]

        def sample(pipe, prompts, **kw):
            return pipe.image_to_image(image.expand(len(prompts), -1, -1, -1), prompts,
                                       strength=args.strength, **kw)

        run_image_tool(args, PROG, sample, {"pixels": image, "image": str(args.image),
                                            "strength": args.strength})

    return run(parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
