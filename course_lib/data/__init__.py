"""Offline data: everything here exists on every machine, no downloads.

* ``text``: English prose and code that ship with CPython, tokenised into windows;
* ``shapes``: procedurally generated captioned shapes (``make_shapes``);
* ``images``: scikit-learn's bundled digits and scikit-image's bundled photographs.
"""

from .images import *  # noqa: F401,F403
from .shapes import *  # noqa: F401,F403
from .text import *  # noqa: F401,F403
