"""Instant checks for the exercises: run your function against the reference.

    from course_lib import exercises
    exercises.check_attention(my_attention)      # ✅ / ⏳ not yet / ❌ with what differs
    exercises.reveal("check_attention")          # a reference solution, when you want one

One module per notebook (``nb01_attention``, ``nb02_transformer_block``, …); every
check is importable from here. ``EXERCISES`` lists them with their notebooks and
reference solutions (``course_lib.solutions``); see ``core`` for how to add one.
"""

from .core import (EXERCISES, Case, Exercise, describe_difference, register, require_signature, reveal,  # noqa: F401
                   run_cases)
from .nb01_attention import *  # noqa: F401,F403
from .nb02_transformer_block import *  # noqa: F401,F403
from .nb03_gpt2 import *  # noqa: F401,F403
from .nb04_training_a_small_gpt import *  # noqa: F401,F403
from .nb05_lora import *  # noqa: F401,F403
from .nb06_sampling import *  # noqa: F401,F403
from .nb07_autoencoders import *  # noqa: F401,F403
from .nb08_unet import *  # noqa: F401,F403
from .nb09_ddpm import *  # noqa: F401,F403
from .nb10_ddim_and_guidance import *  # noqa: F401,F403
from .nb11_stable_diffusion import *  # noqa: F401,F403
from .nb12_inpainting import *  # noqa: F401,F403
