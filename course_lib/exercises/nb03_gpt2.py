"""Notebook 03 (GPT-2): checks for the Conv1D transpose, the KV cache's size and a cached attention step."""

from __future__ import annotations

import torch

from ..attention import causal_mask, scaled_dot_product_attention
from ..kv_cache import KVCache
from .core import Case, generator, register, require_signature, run_cases

__all__ = ["check_conv1d_to_linear", "check_kv_cache_bytes", "check_cached_attention"]


def check_conv1d_to_linear(fn, seed: int = 0) -> bool:
    """Check ``fn(w, b) -> (weight, bias)``: the ``nn.Linear`` parameters that compute the same
    function as a Hugging Face ``Conv1D`` with weight ``w [in, out]`` and bias ``b [out]``.

    ``Conv1D`` computes ``y = x W + b``; ``nn.Linear`` computes ``y = x Wᵀ + b`` with its
    weight stored ``[out, in]`` — so the weight is transposed and the bias kept.
    """
    require_signature(fn, "fn(w, b)", 2)
    g = generator(seed)
    cases = []
    for n_in, n_out in [(3, 5), (8, 8), (16, 4)]:
        w, b = torch.randn(n_in, n_out, generator=g), torch.randn(n_out, generator=g)
        cases.append(Case(f"Conv1D in={n_in}, out={n_out}", (w.clone(), b.clone()), (w.t(), b)))
    return run_cases("check_conv1d_to_linear", fn, cases, atol=0, rtol=0,
                     hint="nn.Linear stores its weight as [out, in]; Conv1D as [in, out]")


def check_kv_cache_bytes(fn) -> bool:
    """Check ``fn(n_layers, batch_size, n_positions, d_model, bytes_per_value) -> int``: the memory
    of a full KV cache (keys and values of every layer, head and position), in bytes.

    The reference is ``course_lib.kv_cache.KVCache(...).nbytes()``, built on the ``meta``
    device (no memory is allocated).
    """
    require_signature(fn, "fn(n_layers, batch_size, n_positions, d_model, bytes_per_value)", 5)
    dtypes = {4: torch.float32, 2: torch.float16, 1: torch.int8}
    cases = []
    for label, (n_layers, batch, positions, d_model, n_heads, nbytes) in {
        "GPT-2 small, 1 sequence, fp32": (12, 1, 1024, 768, 12, 4),
        "GPT-2 medium, 8 sequences, fp16": (24, 8, 1024, 1024, 16, 2),
        "GPT-2 XL, 4 sequences, fp16": (48, 4, 1024, 1600, 25, 2),
        "tiny-gpt, 24 sequences, fp32": (4, 24, 128, 128, 4, 4),
    }.items():
        cache = KVCache(n_layers, batch, n_heads, positions, d_model // n_heads, device="meta",
                        dtype=dtypes[nbytes])
        cases.append(Case(label, (n_layers, batch, positions, d_model, nbytes), cache.nbytes()))

    def compare(got, expected):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            return f"returned {type(got).__name__}, expected a number of bytes"
        if got != expected:
            ratio = f" ({got / expected:.3g}× the right size)" if expected else ""
            return f"got {got:,} bytes, expected {expected:,}{ratio}"
        return None

    return run_cases("check_kv_cache_bytes", fn, cases, compare=compare,
                     hint="keys AND values, for every layer, sequence and position; the heads "
                          "together are d_model numbers wide")


def check_cached_attention(fn, seed: int = 0) -> bool:
    """Check ``fn(q, k, v, past_k, past_v) -> (out, k_all, v_all)``: causal attention for new
    positions that come after cached ones.

    q, k, v: ``[B, H, T_new, d]`` for the new positions; past_k, past_v: ``[B, H, T_past, d]``
    (``T_past`` may be 0). ``k_all, v_all = past ⧺ new`` along the positions (``[B, H,
    T_past + T_new, d]``), and ``out [B, H, T_new, d]`` is what full causal attention over
    the whole sequence gives at the new positions: new query i (position ``T_past + i``)
    sees every cached key and the new keys ``0..i``.
    """
    require_signature(fn, "fn(q, k, v, past_k, past_v)", 5)
    g = generator(seed)
    cases = []
    for b, h, t_past, t_new, d in [(1, 1, 0, 4, 8), (2, 3, 5, 1, 8), (2, 2, 3, 3, 4), (1, 4, 7, 2, 16)]:
        q, k, v = (torch.randn(b, h, t_past + t_new, d, generator=g) for _ in range(3))
        out, _ = scaled_dot_product_attention(q, k, v, causal_mask(t_past + t_new))  # the whole sequence
        args = (q[:, :, t_past:], k[:, :, t_past:], v[:, :, t_past:], k[:, :, :t_past], v[:, :, :t_past])
        label = f"B={b} H={h}, {t_past} cached + {t_new} new positions"
        cases.append(Case(label, tuple(a.clone() for a in args), (out[:, :, t_past:], k, v)))
    return run_cases("check_cached_attention", fn, cases, atol=1e-5, rtol=1e-5,
                     hint="concatenate along dim 2; new query i may see keys j ≤ T_past + i "
                          "(the causal mask is shifted by the cached length)")


register(check_conv1d_to_linear, "03", "nb03_gpt2:conv1d_to_linear")
register(check_kv_cache_bytes, "03", "nb03_gpt2:kv_cache_bytes")
register(check_cached_attention, "03", "nb03_gpt2:cached_attention")
