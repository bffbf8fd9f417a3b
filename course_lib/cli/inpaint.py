"""``course-inpaint``: the white part of a mask repainted after a prompt, the rest kept
(``LatentDiffusion.inpaint``): ``blend`` pastes the known region back after every step
(Avrahami et al. 2023), ``repaint`` adds RePaint's resampling jumps (Lugmayr et al. 2022).

    course-inpaint --image scene.png --mask mask.png --prompt "a green triangle" --method repaint
"""

from __future__ import annotations

import sys
from pathlib import Path

from .common import ToolParser, run
from .images import add_image_flags, read_image, read_mask, run_image_tool

PROG = "course-inpaint"


def parser() -> ToolParser:
    p = ToolParser(PROG, __doc__)
    p.add_argument("--image", type=Path, required=True, help="the image to repaint")
    p.add_argument("--mask", type=Path, required=True,
                   help="an image of the same size: white = repaint, black = keep")
    p.add_argument("--method", default="blend", choices=["blend", "repaint"], help="how the known region is kept")
    add_image_flags(p, size_help="resize image and mask to this side first (default: their own size, which "
                                 "must be a multiple of the autoencoder's factor)")
    return p


def main(argv=None) -> int:
    def body(args):
        image = read_image(args.image, (args.height, args.width))  # [1, 3, H, W]
        mask = read_mask(args.mask, image, (args.height, args.width))  # [1, 1, H, W], 1 = repaint

        def sample(pipe, prompts, **kw):
            return pipe.inpaint(image.expand(len(prompts), -1, -1, -1), mask, prompts, method=args.method, **kw)

        run_image_tool(args, PROG, sample, {"pixels": image, "image": str(args.image),
                                            "mask": str(args.mask), "method": args.method})

    return run(parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
