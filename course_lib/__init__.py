"""course_lib: the tested building blocks of "Generative models from the ground up".

One module per building block; the notebooks import from here and show what
happens inside. Nothing in this package touches the network at import time.
"""

__version__ = "0.1.0"
