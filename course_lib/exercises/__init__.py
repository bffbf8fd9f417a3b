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
