"""``course-txt2img``: images from prompts (Rombach et al. 2022; ``LatentDiffusion.text_to_image``).

    course-txt2img --prompt "a red circle" --prompt "a blue square" --out outputs
    course-txt2img --checkpoint stable-diffusion-v1-5/stable-diffusion-v1-5 \\
                   --prompt "a watercolour fox" --steps 30 --device cuda
"""

from __future__ import annotations

import sys

from .common import ToolParser, run
from .images import add_image_flags, run_image_tool

PROG = "course-txt2img"


def parser() -> ToolParser:
    p = ToolParser(PROG, __doc__)
    add_image_flags(p, size_help="image side in pixels, a multiple of the autoencoder's factor "
                                 "(8 for Stable Diffusion, 4 for zoo:shapes-ldm); default: the model's")
    return p


def main(argv=None) -> int:
    def body(args):
        def sample(pipe, prompts, **kw):
            return pipe.text_to_image(prompts, height=args.height, width=args.width, **kw)

        run_image_tool(args, PROG, sample)

    return run(parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
