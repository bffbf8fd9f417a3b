"""Instant checks for the exercises: run your function against the reference.

Each ``check_*(fn)`` calls your ``fn`` on a few random inputs (several shapes,
with and without masks...), compares with ``course_lib``'s reference, prints
one line per case that differs (what differs: shape, dtype, largest error) and
returns True when every case matches. A function that raises is reported, not
re-raised; a function whose signature cannot take the arguments is a
``TypeError`` at once, naming the signature expected.

Adding a check (authors of later notebooks): write ``check_<name>(fn)`` that
calls ``_require_signature(fn, "name(a, b, c=None)", n_positional, kwargs)``,
builds a list of ``Case(label, args, kwargs, expected)`` and returns
``run_cases("name", fn, cases)``. ``expected`` is a tensor or a tuple of
tensors; pass ``compare=`` for anything else.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .attention import causal_mask, scaled_dot_product_attention
from .transformer import sinusoidal_encoding


@dataclass
class Case:
    """One input to try: ``fn(*args, **kwargs)`` should equal ``expected``."""

    label: str
    args: tuple
    expected: object
    kwargs: dict = field(default_factory=dict)


def _require_signature(fn, expected: str, n_positional: int, kwargs=()) -> None:
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
        print(f"⏳ {name}: not implemented yet (your function raised NotImplementedError)")
        return False
    print(f"❌ {name}: {len(failures)} case(s) differ from the reference")
    for label, problem in failures:
        print(f"   - {label}: {problem}")
    if hint:
        print(f"   hint: {hint}")
    return False


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- notebook 01


def check_attention(fn, seed: int = 0) -> bool:
    """Check ``fn(q, k, v, mask=None)`` -> output ``[B, H, T_q, D_v]`` or ``(output, weights)``.

    mask: bool, broadcastable to [B, H, T_q, T_k], True = may attend. Cases:
    several shapes, cross-attention (T_q ≠ T_k), a causal mask, a padding mask.
    """
    _require_signature(fn, "fn(q, k, v, mask=None)", 3, ["mask"])
    g = _gen(seed)
    cases = []
    for b, h, t_q, t_k, d, mask_kind in [
        (1, 1, 4, 4, 8, None), (2, 4, 6, 6, 16, None), (2, 2, 3, 7, 8, None),
        (2, 3, 5, 5, 8, "causal"), (2, 2, 4, 6, 4, "padding"),
    ]:
        q, k, v = (torch.randn(b, h, t, d, generator=g) for t in (t_q, t_k, t_k))
        mask = None
        if mask_kind == "causal":
            mask = causal_mask(t_q, t_k)  # [T_q, T_k]
        elif mask_kind == "padding":
            mask = torch.ones(b, 1, 1, t_k, dtype=torch.bool)
            mask[0, ..., -2:] = False  # the last two keys of sequence 0 are padding
        out, weights = scaled_dot_product_attention(q, k, v, mask)
        label = f"B={b} H={h} T_q={t_q} T_k={t_k} D={d}" + (f", {mask_kind} mask" if mask_kind else "")
        cases.append(Case(label, (q, k, v), (out, weights), {"mask": mask}))
    # returning only the output is fine; returned weights are checked too
    return run_cases("check_attention", fn, cases, min_outputs=1,
                     hint="softmax over the keys (last dim), scale by 1/sqrt(d_k), masked scores -> -inf")


def check_causal_mask(fn) -> bool:
    """Check ``fn(T)`` -> bool ``[T, T]``, True where query i may attend key j (j ≤ i)."""
    _require_signature(fn, "fn(T)", 1)
    cases = [Case(f"T={t}", (t,), causal_mask(t)) for t in (1, 2, 5, 9)]
    return run_cases("check_causal_mask", fn, cases,
                     hint="True on and below the diagonal (torch.tril), dtype torch.bool")


def check_split_heads(fn, seed: int = 0) -> bool:
    """Check ``fn(x, n_heads)``: ``[B, T, C]`` -> ``[B, n_heads, T, C // n_heads]``."""
    _require_signature(fn, "fn(x, n_heads)", 2)
    g = _gen(seed)
    cases = []
    for b, t, c, h in [(1, 3, 8, 2), (2, 5, 12, 3), (2, 4, 16, 4)]:
        x = torch.randn(b, t, c, generator=g)
        cases.append(Case(f"B={b} T={t} C={c} heads={h}", (x, h), x.view(b, t, h, c // h).transpose(1, 2)))
    return run_cases("check_split_heads", fn, cases, atol=0, rtol=0,
                     hint="view as [B, T, H, C/H], then swap the T and H axes")


def check_positional_encoding(fn) -> bool:
    """Check ``fn(n_positions, d_model)`` -> the sinusoidal table ``[n_positions, d_model]``.

    Even columns sin(pos / 10000^(2i/d)), odd columns cos (Vaswani et al. 2017, §3.5).
    """
    _require_signature(fn, "fn(n_positions, d_model)", 2)
    cases = [Case(f"n_positions={n} d_model={d}", (n, d), sinusoidal_encoding(n, d))
             for n, d in [(4, 2), (10, 8), (50, 32)]]
    return run_cases("check_positional_encoding", fn, cases, atol=1e-5, rtol=1e-4,
                     hint="column 2i is sin(pos · 10000^(−2i/d)), column 2i+1 is cos of the same angle")


# ----------------------------------------------------------------------------- notebook 02


def check_layer_norm(fn, seed: int = 0) -> bool:
    """Check ``fn(x, weight, bias, eps=1e-5)``: LayerNorm over the last dim (Ba et al. 2016).

    (x − mean) / sqrt(var + eps) · weight + bias, with the *biased* variance.
    """
    _require_signature(fn, "fn(x, weight, bias, eps=1e-5)", 3, ["eps"])
    g = _gen(seed)
    cases = []
    for shape, eps in [((2, 3, 8), 1e-5), ((4, 16), 1e-5), ((1, 5, 6), 1e-2)]:
        x = torch.randn(*shape, generator=g) * 3 + 1
        w, b = torch.randn(shape[-1], generator=g), torch.randn(shape[-1], generator=g)
        cases.append(Case(f"x {list(shape)}, eps={eps:g}", (x, w, b),
                          F.layer_norm(x, (shape[-1],), w, b, eps), {"eps": eps}))
    return run_cases("check_layer_norm", fn, cases, atol=1e-4, rtol=1e-4,
                     hint="normalise over the last dim with the biased variance (unbiased=False), eps inside the sqrt")


def check_gelu(fn, approximate: str = "none", seed: int = 0) -> bool:
    """Check ``fn(x)`` against GELU (Hendrycks & Gimpel 2016): x · Φ(x).

    approximate="none": the exact erf form; "tanh": GPT-2's tanh approximation.
    """
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    _require_signature(fn, "fn(x)", 1)
    g = _gen(seed)
    xs = [torch.linspace(-6, 6, 101), torch.randn(3, 7, generator=g) * 2]
    cases = [Case(f"x of shape {list(x.shape)}", (x,), F.gelu(x, approximate=approximate)) for x in xs]
    other = "tanh" if approximate == "none" else "none"
    ok = run_cases(f"check_gelu (approximate={approximate!r})", fn, cases, atol=1e-5, rtol=1e-5)
    if not ok:
        try:
            if all(describe_difference(fn(x), F.gelu(x, approximate=other), 1e-5, 1e-5) is None for x in xs):
                print(f"   note: your function matches approximate={other!r}; "
                      f"call check_gelu(fn, approximate={other!r}) if that is what you meant")
        except Exception:
            pass
    return ok

