"""What every command-line tool shares: the parser, one flag per idea, errors as one line.

Flags with the same meaning in every tool that has them:

* ``--prompt TEXT`` (repeatable) / ``--prompt-file FILE`` (one prompt per line);
* ``--seed N``, ``--device cpu|cuda|cuda:1|mps``, ``--dtype auto|float32|float16|bfloat16``;
* ``--zoo-option KEY=VALUE``: a recipe override for a ``zoo:`` model (tests use tiny ones);
* ``--out``, ``--overwrite`` (existing files are never replaced without it);
* ``--no-progress``, ``--debug`` (a full traceback instead of the one-line error).

Bad input — a missing file, an image side the model cannot take, a prompt longer
than the context, an unknown sampler — ends the tool with one line
``<tool>: error: <what was wrong and what is allowed>`` on stderr and a non-zero
exit status: 2 for a flag argparse rejects, 1 for input found wrong while running.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..checkpoint import DamagedFileError

__all__ = ["ToolParser", "add_run_flags", "add_prompt_flags", "add_zoo_flag", "read_prompts", "zoo_options",
           "resolve_device", "resolve_dtype", "check_free", "run", "USER_ERRORS"]

# The library raises these for bad input (course_lib.checks, missing or damaged files).
USER_ERRORS = (ValueError, TypeError, OSError, KeyError, DamagedFileError)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults after each flag and keep the description's line breaks."""


class ToolParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (argparse prints the whole usage first)."""

    def __init__(self, prog: str, description: str):
        super().__init__(prog=prog, description=description, formatter_class=_HelpFormatter)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_run_flags(parser: argparse.ArgumentParser, seed_help: str = "random seed") -> None:
    """``--seed``, ``--device``, ``--dtype``, ``--overwrite``, ``--no-progress``, ``--debug``."""
    parser.add_argument("--seed", type=int, default=0, help=seed_help)
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, cuda:N or mps (default: the best there is: cuda > mps > cpu)")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                        help="precision; auto: the tool's choice for the device")
    parser.add_argument("--overwrite", action="store_true", help="replace output files that exist")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")


def add_prompt_flags(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                        help=f"{what} (repeat the flag for several)")
    parser.add_argument("--prompt-file", type=Path, default=None, metavar="FILE",
                        help="a text file with one prompt per line (blank lines skipped)")


def add_zoo_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--zoo-option", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of a zoo: model's recipe (VALUE is JSON or a string); "
                             "another recipe trains and caches another model")


def read_prompts(args: argparse.Namespace) -> list[str]:
    """The prompts of ``--prompt`` flags, then those of ``--prompt-file``."""
    prompts = list(args.prompt)
    if args.prompt_file is not None:
        if not args.prompt_file.is_file():
            raise FileNotFoundError(f"--prompt-file {args.prompt_file}: no such file")
        lines = args.prompt_file.read_text(encoding="utf-8").splitlines()
        prompts += [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise ValueError("no prompt: give --prompt TEXT (repeatable) or --prompt-file FILE")
    return prompts


def zoo_options(args: argparse.Namespace) -> dict:
    """``--zoo-option KEY=VALUE`` flags as a dict (VALUE parsed as JSON, else kept as a string)."""
    options = {}
    for item in args.zoo_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--zoo-option {item!r}: expected KEY=VALUE, e.g. steps=100")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def resolve_device(name: str | None) -> torch.device:
    """``--device``: a device that exists here (default ``course_lib.device.get_device()``)."""
    from ..device import get_device

    if name is None:
        return get_device()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"--device {name}: no such CUDA device here ({torch.cuda.device_count()} available)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps: Apple's MPS backend is not available here")
    return device


def resolve_dtype(name: str) -> torch.dtype | None:
    """``--dtype``: a torch dtype, or None for ``auto`` (the tool decides per device)."""
    return None if name == "auto" else DTYPES[name]


def check_free(paths, overwrite: bool) -> None:
    """Refuse to replace existing output files unless ``--overwrite``."""
    existing = [p for p in paths if Path(p).exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise FileExistsError(f"{existing[0]} exists{more}; pass --overwrite to replace it")


def _one_line(exc: BaseException) -> str:
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(str(text).split()) or type(exc).__name__


def run(parser: argparse.ArgumentParser, body, argv=None) -> int:
    """Parse ``argv``, call ``body(args)``; turn bad input into one line on stderr and exit status 1."""
    args = parser.parse_args(argv)
    try:
        body(args)
    except USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"{parser.prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0
