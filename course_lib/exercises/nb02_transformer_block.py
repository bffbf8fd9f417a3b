"""Notebook 02 (transformer block): checks for LayerNorm, GELU and a post-norm block."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..device import seeded
from ..transformer import TransformerBlock
from .core import Case, describe_difference, generator, register, require_signature, run_cases

__all__ = ["check_layer_norm", "check_gelu", "check_gelu_tanh", "check_post_norm_block"]


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
    name = "check_gelu" if approximate == "none" else "check_gelu_tanh"  # the registered names (reveal)
    ok = run_cases(name, fn, cases, atol=1e-5, rtol=1e-5)
    if not ok:
        try:
            if all(describe_difference(fn(x), F.gelu(x, approximate=other), 1e-5, 1e-5) is None for x in xs):
                print(f"   note: your function matches approximate={other!r}; call "
                      + ("check_gelu_tanh(fn)" if other == "tanh" else "check_gelu(fn)") + " if that is what you meant")
        except Exception:
            pass
    return ok


def check_gelu_tanh(fn, seed: int = 0) -> bool:
    """Check ``fn(x)`` against GPT-2's tanh approximation of GELU: ``check_gelu(fn, approximate="tanh")``."""
    return check_gelu(fn, approximate="tanh", seed=seed)


def _post_norm_block(x: torch.Tensor, block: TransformerBlock) -> torch.Tensor:
    """The post-norm block of the original transformer (Vaswani et al. 2017, §3.1:
    ``LayerNorm(x + Sublayer(x))``), built from a pre-norm ``TransformerBlock``'s parts."""
    x = block.ln_1(x + block.attn(x, causal=block.causal))  # [B, T, d_model]
    return block.ln_2(x + block.mlp(x))  # [B, T, d_model]


def check_post_norm_block(fn, seed: int = 0) -> bool:
    """Check ``fn(x, block)``: a post-norm block from the parts of ``block`` (a ``TransformerBlock``).

    ``x <- ln_1(x + attn(x))``, then ``x <- ln_2(x + mlp(x))``, attention causal when
    ``block.causal``. Cases: causal and bidirectional blocks with random weights
    (LayerNorm gains and biases included), several shapes.
    """
    require_signature(fn, "fn(x, block)", 2)
    g = generator(seed)
    cases = []
    for i, (b, t, d, h, causal) in enumerate([(1, 4, 16, 2, True), (2, 6, 32, 4, True), (2, 5, 16, 4, False)]):
        with seeded(seed + i):  # leaves the caller's random state as it was
            block = TransformerBlock(d, h, causal=causal).eval()
        with torch.no_grad():
            for p in block.parameters():  # random gains and biases too, so every part matters
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        x = torch.randn(b, t, d, generator=g) * 2
        with torch.no_grad():
            expected = _post_norm_block(x, block)
        label = f"B={b} T={t} d_model={d} heads={h}, {'causal' if causal else 'bidirectional'}"
        cases.append(Case(label, (x, block), expected))
    with torch.no_grad():
        return run_cases("check_post_norm_block", fn, cases, atol=1e-5, rtol=1e-4,
                         hint="add first, then normalise: ln_1(x + attn(x, causal=block.causal)), "
                              "then ln_2(x + mlp(x)); no LayerNorm before a sub-layer")


register(check_layer_norm, "02", "nb02_transformer_block:my_layer_norm")
register(check_gelu, "02", "nb02_transformer_block:my_gelu")
register(check_gelu_tanh, "02", "nb02_transformer_block:my_gelu_tanh")
register(check_post_norm_block, "02", "nb02_transformer_block:my_post_norm_block")
