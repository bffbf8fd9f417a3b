"""Notebook 02 (transformer block): checks for LayerNorm and GELU."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .core import Case, describe_difference, generator, register, require_signature, run_cases

__all__ = ["check_layer_norm", "check_gelu"]


def check_layer_norm(fn, seed: int = 0) -> bool:
    """Check ``fn(x, weight, bias, eps=1e-5)``: LayerNorm over the last dim (Ba et al. 2016).

    (x − mean) / sqrt(var + eps) · weight + bias, with the *biased* variance.
    """
    require_signature(fn, "fn(x, weight, bias, eps=1e-5)", 3, ["eps"])
    g = generator(seed)
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
    require_signature(fn, "fn(x)", 1)
    g = generator(seed)
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


register(check_layer_norm, "02", "nb02_transformer_block:my_layer_norm")
register(check_gelu, "02", "nb02_transformer_block:my_gelu")
register(check_gelu, "02", "nb02_transformer_block:my_gelu_tanh", name="check_gelu_tanh", approximate="tanh")
