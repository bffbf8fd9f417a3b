"""Notebook 05 (LoRA): checks for merging an adapter and for the embedding adapter (lookup and tied head).

Every expected value comes from ``course_lib.lora`` (``LoRALinear.merge``, ``LoRAEmbedding.forward``
and ``LoRAEmbedding.attend``), with random adapters so that ``B A`` is not zero.
"""

from __future__ import annotations

import torch

from ..lora import LoRAEmbedding, LoRALinear
from .core import Case, generator, register, require_signature, run_cases

__all__ = ["check_lora_merge", "check_lora_embedding", "check_lora_tied_head"]


def _trained_linear(in_f: int, out_f: int, r: int, alpha: float, g: torch.Generator) -> LoRALinear:
    layer = LoRALinear(in_f, out_f, r, alpha)
    with torch.no_grad():  # random everything, B included: a "trained" adapter
        for p in (layer.weight, layer.bias, layer.lora_A, layer.lora_B):
            p.copy_(torch.randn(p.shape, generator=g))
    return layer


def _trained_embedding(n: int, d: int, r: int, alpha: float, g: torch.Generator) -> LoRAEmbedding:
    layer = LoRAEmbedding(n, d, r, alpha)
    with torch.no_grad():
        for p in (layer.weight, layer.lora_A, layer.lora_B):
            p.copy_(torch.randn(p.shape, generator=g))
    return layer


def check_lora_merge(fn, seed: int = 0) -> bool:
    """Check ``fn(weight, lora_A, lora_B, alpha, r)`` -> the merged weight ``[out, in]``.

    ``W = W0 + (α / r) · B A`` (Hu et al. 2021, eq. 3, folded into one matrix), with
    ``weight [out, in]``, ``lora_A [r, in]``, ``lora_B [out, r]``.
    """
    require_signature(fn, "fn(weight, lora_A, lora_B, alpha, r)", 5)
    g = generator(seed)
    cases = []
    for in_f, out_f, r, alpha in [(6, 4, 1, 1.0), (16, 24, 4, 8.0), (32, 8, 8, 16.0)]:
        layer = _trained_linear(in_f, out_f, r, alpha, g)
        args = (layer.weight.detach().clone(), layer.lora_A.detach().clone(), layer.lora_B.detach().clone(),
                alpha, r)
        layer.merge()
        cases.append(Case(f"in={in_f} out={out_f} r={r} alpha={alpha:g}", args, layer.weight.detach().clone()))
    return run_cases("check_lora_merge", fn, cases, atol=1e-4, rtol=1e-5,
                     hint="ΔW = (alpha / r) · lora_B @ lora_A has the shape of the weight [out, in]")


def check_lora_embedding(fn, seed: int = 0) -> bool:
    """Check ``fn(ids, weight, lora_A, lora_B, scaling)`` -> embeddings ``[..., d]``.

    The adapted table is ``E' = E + scaling · (B A)ᵀ`` with ``weight E [n, d]``,
    ``lora_A [r, n]`` and ``lora_B [d, r]`` (``course_lib.lora.LoRAEmbedding``);
    the output is ``E'[ids]``. ``ids`` may be ``[T]`` or ``[B, T]``.
    """
    require_signature(fn, "fn(ids, weight, lora_A, lora_B, scaling)", 5)
    g = generator(seed)
    cases = []
    for n, d, r, alpha, shape in [(10, 4, 1, 1.0, (5,)), (50, 16, 4, 8.0, (2, 7)), (30, 8, 2, 1.0, (3, 3))]:
        layer = _trained_embedding(n, d, r, alpha, g)
        ids = torch.randint(0, n, shape, generator=g)
        args = (ids, layer.weight.detach(), layer.lora_A.detach(), layer.lora_B.detach(), layer.scaling)
        with torch.no_grad():
            cases.append(Case(f"n={n} d={d} r={r}, ids {list(shape)}", args, layer(ids)))
    return run_cases("check_lora_embedding", fn, cases, atol=1e-4, rtol=1e-5,
                     hint="token i's row gets scaling · B @ A[:, i]; lora_A.T[ids] gives the [..., r] rows of Aᵀ")


def check_lora_tied_head(fn, seed: int = 0) -> bool:
    """Check ``fn(h, weight, lora_A, lora_B, scaling)`` -> logits ``h E'ᵀ`` ``[..., n]``.

    GPT-2's output head is tied to the token embedding, so with an embedding adapter the head
    uses the adapted table ``E' = E + scaling · (B A)ᵀ`` too (``LoRAEmbedding.attend``).
    ``h [..., d]``, ``weight E [n, d]``, ``lora_A [r, n]``, ``lora_B [d, r]``.
    """
    require_signature(fn, "fn(h, weight, lora_A, lora_B, scaling)", 5)
    g = generator(seed)
    cases = []
    for n, d, r, alpha, lead in [(12, 4, 1, 1.0, (3,)), (40, 16, 4, 8.0, (2, 5)), (25, 8, 2, 0.5, (1, 1, 4))]:
        layer = _trained_embedding(n, d, r, alpha, g)
        h = torch.randn(*lead, d, generator=g)
        args = (h, layer.weight.detach(), layer.lora_A.detach(), layer.lora_B.detach(), layer.scaling)
        with torch.no_grad():
            cases.append(Case(f"n={n} d={d} r={r}, h {list(h.shape)}", args, layer.attend(h)))
    return run_cases("check_lora_tied_head", fn, cases, atol=1e-4, rtol=1e-4,
                     hint="h @ E'ᵀ = h @ Eᵀ + scaling · (h @ B) @ A: no need to build the [n, d] table")


register(check_lora_merge, "05", "nb05_lora:my_lora_merge")
register(check_lora_embedding, "05", "nb05_lora:my_lora_embedding")
register(check_lora_tied_head, "05", "nb05_lora:my_lora_tied_head")
