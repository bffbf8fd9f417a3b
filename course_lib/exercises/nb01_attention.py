"""Notebook 01 (attention): checks for the causal mask, attention, head splitting, sinusoids."""

from __future__ import annotations

import torch

from ..attention import causal_mask, scaled_dot_product_attention
from ..transformer import sinusoidal_encoding
from .core import Case, generator, register, require_signature, run_cases

__all__ = ["check_attention", "check_causal_mask", "check_split_heads", "check_positional_encoding"]


def check_attention(fn, seed: int = 0) -> bool:
    """Check ``fn(q, k, v, mask=None)`` -> output ``[B, H, T_q, D_v]`` or ``(output, weights)``.

    mask: bool, broadcastable to [B, H, T_q, T_k], True = may attend. Cases:
    several shapes, cross-attention (T_q ≠ T_k), a causal mask, a padding mask.
    """
    require_signature(fn, "fn(q, k, v, mask=None)", 3, ["mask"])
    g = generator(seed)
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
    require_signature(fn, "fn(T)", 1)
    cases = [Case(f"T={t}", (t,), causal_mask(t)) for t in (1, 2, 5, 9)]
    return run_cases("check_causal_mask", fn, cases,
                     hint="True on and below the diagonal (torch.tril), dtype torch.bool")


def check_split_heads(fn, seed: int = 0) -> bool:
    """Check ``fn(x, n_heads)``: ``[B, T, C]`` -> ``[B, n_heads, T, C // n_heads]``."""
    require_signature(fn, "fn(x, n_heads)", 2)
    g = generator(seed)
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
    require_signature(fn, "fn(n_positions, d_model)", 2)
    cases = [Case(f"n_positions={n} d_model={d}", (n, d), sinusoidal_encoding(n, d))
             for n, d in [(4, 2), (10, 8), (50, 32)]]
    return run_cases("check_positional_encoding", fn, cases, atol=1e-5, rtol=1e-4,
                     hint="column 2i is sin(pos · 10000^(−2i/d)), column 2i+1 is cos of the same angle")




register(check_causal_mask, "01", "nb01_attention:my_causal_mask")
register(check_attention, "01", "nb01_attention:my_attention")
register(check_split_heads, "01", "nb01_attention:my_split_heads")
register(check_positional_encoding, "01", "nb01_attention:my_sinusoidal")
