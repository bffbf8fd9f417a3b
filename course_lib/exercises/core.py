"""The machinery of the exercise checks: cases, comparisons, the registry, solutions.

A check calls the learner's function on a few inputs, compares with the
course's reference, prints one line per case that differs (what differs:
shape, dtype, largest error) and returns True when every case matches. A
function that raises is reported, not re-raised; a stub that raises
``NotImplementedError`` gets a short "not yet" line (so an executed notebook
shows that line, not a traceback); a function whose signature cannot take the
arguments is a ``TypeError`` at once, naming the signature expected.

Adding a check: write ``check_<name>(fn)`` in the notebook's module
(``course_lib/exercises/nbXX_*.py``) that calls ``require_signature(fn,
"name(a, b, c=None)", n_positional, kwargs)``, builds a list of
``Case(label, args, expected, kwargs)`` and returns ``run_cases("check_<name>",
fn, cases)`` (``expected``: a tensor or a tuple of tensors; pass ``compare=``
for anything else); write the reference solution in
``course_lib/solutions/nbXX_*.py``; and ``register(check, notebook, solution)``
it, so the tests prove the check fails on a stub and passes on the solution.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass
class Case:
    """One input to try: ``fn(*args, **kwargs)`` should equal ``expected``."""

    label: str
    args: tuple
    expected: object
    kwargs: dict = field(default_factory=dict)


def require_signature(fn, expected: str, n_positional: int, kwargs=()) -> None:
    """TypeError unless ``fn`` can be called with ``n_positional`` arguments and ``kwargs``."""
    if not callable(fn):
        raise TypeError(f"expected a function {expected}, got {type(fn).__name__}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have no signature; just try them
        return
    try:
        sig.bind(*range(n_positional), **{k: None for k in kwargs})
    except TypeError as exc:
        name = getattr(fn, "__name__", "your function")
        raise TypeError(f"{name}{sig} cannot be called as {expected} ({exc})") from None


def describe_difference(got, expected, atol: float, rtol: float) -> str | None:
    """None when ``got`` matches ``expected`` (a tensor); otherwise what differs, in words."""
    if not isinstance(got, torch.Tensor):
        return f"returned {type(got).__name__}, expected a tensor"
    if got.shape != expected.shape:
        return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    if expected.dtype == torch.bool or got.dtype == torch.bool:
        if got.dtype != expected.dtype:
            return f"dtype {got.dtype}, expected {expected.dtype}"
        wrong = (got != expected).nonzero()
        if len(wrong):
            return f"{len(wrong)} of {expected.numel()} entries wrong, first at index {tuple(wrong[0].tolist())}"
        return None
    if not got.dtype.is_floating_point:
        got = got.to(expected.dtype)
    got, expected = got.detach().cpu(), expected.detach().cpu()
    if torch.isnan(got).any() and not torch.isnan(expected).any():
        return f"contains NaN at {tuple(torch.isnan(got).nonzero()[0].tolist())}"
    err = (got - expected).abs()
    bad = err > atol + rtol * expected.abs()
    if bad.any():
        idx = tuple(bad.nonzero()[0].tolist())
        return (f"max |error| = {err.max().item():.3g} (allowed {atol:g} + {rtol:g}·|expected|), "
                f"first wrong at index {idx}: got {got[idx].item():.5g}, expected {expected[idx].item():.5g}")
    return None


def run_cases(name: str, fn, cases: list[Case], atol: float = 1e-5, rtol: float = 1e-5, compare=None,
              hint: str | None = None, min_outputs: int | None = None) -> bool:
    """Run every case, print the outcome, return True when all match.

    When ``expected`` is a tuple, ``fn`` must return at least ``min_outputs``
    of its values (default: all); the values it does return are compared.
    """
    compare = compare or (lambda got, exp: describe_difference(got, exp, atol, rtol))
    failures = []
    for case in cases:
        try:
            got = fn(*case.args, **case.kwargs)
        except NotImplementedError:
            failures.append((case.label, "not implemented yet (raised NotImplementedError)"))
            break
        except Exception as exc:  # the learner's bug: report it with the case that triggered it
            failures.append((case.label, f"raised {type(exc).__name__}: {exc}"))
            continue
        expected = case.expected if isinstance(case.expected, tuple) else (case.expected,)
        got = got if isinstance(got, tuple) else (got,)
        need = len(expected) if min_outputs is None else min_outputs
        if len(got) < need:
            failures.append((case.label, f"returned {len(got)} value(s), expected {need}"))
            continue
        for i, (g, e) in enumerate(zip(got, expected)):
            problem = compare(g, e)
            if problem:
                what = f"output {i}: " if len(expected) > 1 else ""
                failures.append((case.label, what + problem))
                break
    if not failures:
        print(f"✅ {name}: all {len(cases)} cases match the reference")
        return True
    if len(failures) == 1 and failures[0][1].startswith("not implemented"):
        print(f"⏳ {name}: not yet — your function raises NotImplementedError. Fill it in and run the cell "
              f"again (exercises.reveal({name!r}) shows a solution).")
        return False
    print(f"❌ {name}: {len(failures)} case(s) differ from the reference")
    for label, problem in failures:
        print(f"   - {label}: {problem}")
    if hint:
        print(f"   hint: {hint}")
    return False


def generator(seed: int) -> torch.Generator:
    """A seeded CPU generator for the random inputs of a check."""
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- the registry

@dataclass(frozen=True)
class Exercise:
    """A registered exercise: its check, the notebook it belongs to and its reference solution.

    ``solution`` is ``"module:function"`` inside ``course_lib.solutions``; ``kwargs`` are
    passed to the check (e.g. ``approximate="tanh"``).
    """

    name: str
    check: Callable
    notebook: str
    solution: str
    kwargs: dict = field(default_factory=dict)

    def reference(self) -> Callable:
        module, _, function = self.solution.partition(":")
        return getattr(importlib.import_module(f"course_lib.solutions.{module}"), function)

    def run(self, fn) -> bool:
        return self.check(fn, **self.kwargs)


EXERCISES: dict[str, Exercise] = {}


def register(check: Callable, notebook: str, solution: str, name: str | None = None, **kwargs) -> Callable:
    """Record ``check`` (under ``name``, default its own name) with its notebook and solution."""
    name = name or check.__name__
    if name in EXERCISES:
        raise ValueError(f"exercise {name!r} is registered twice")
    EXERCISES[name] = Exercise(name, check, notebook, solution, dict(kwargs))
    return check


def reveal(name: str) -> str:
    """Print (and return) the reference solution of exercise ``name`` — only when you want it."""
    if name not in EXERCISES:
        raise ValueError(f"no exercise {name!r}; known: {', '.join(sorted(EXERCISES))}")
    source = inspect.getsource(EXERCISES[name].reference())
    print(source)
    return source
