"""Notebook 06 (sampling): checks for the top-p, min-p and locally typical filters.

A filter maps logits ``[B, V]`` to logits ``[B, V]`` with the removed tokens set to
``-inf`` and the kept ones unchanged. The reference is ``course_lib.sampling``
(equal to ``transformers``' logits warpers). The cases use continuous random logits,
so no two tokens tie and no cut falls exactly on a threshold.
"""

from __future__ import annotations

import torch

from ..sampling import min_p_filter, top_p_filter, typical_filter
from .core import Case, describe_difference, generator, register, require_signature, run_cases

__all__ = ["check_top_p_filter", "check_min_p_filter", "check_typical_filter"]


def compare_filtered(got, expected) -> str | None:
    """None when ``got`` keeps the same tokens as ``expected`` with unchanged logits; else what differs."""
    if not isinstance(got, torch.Tensor):
        return f"returned {type(got).__name__}, expected a tensor of logits"
    if got.shape != expected.shape:
        return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    got, expected = got.detach().cpu().float(), expected.detach().cpu()
    kept, want = torch.isfinite(got), torch.isfinite(expected)
    if not torch.equal(kept, want):
        row = int((kept != want).any(-1).nonzero()[0])
        extra = kept[row] & ~want[row]
        if extra.any() and (got[row][extra] < -1e4).all():
            return (f"row {row}: removed tokens hold large negative numbers; set them to float('-inf') "
                    f"so their probability is exactly 0")
        return f"row {row} keeps {int(kept[row].sum())} tokens, expected {int(want[row].sum())}"
    return describe_difference(got.masked_fill(~kept, 0.0), expected.masked_fill(~want, 0.0), 1e-6, 1e-6)


def _logit_cases(seed: int, params, what: str, reference) -> list[Case]:
    g = generator(seed)
    cases = []
    for b, v, scale, value in params:
        logits = torch.randn(b, v, generator=g) * scale
        cases.append(Case(f"logits [{b}, {v}] (scale {scale:g}), {what}={value:g}", (logits.clone(), value),
                          reference(logits, value)))
    return cases


def check_top_p_filter(fn, seed: int = 0) -> bool:
    """Check ``fn(logits, p)``: the nucleus filter (Holtzman et al. 2020, eq. 2-3).

    Keep the smallest set of most likely tokens whose probability adds up to at least ``p``
    (the token that crosses ``p`` stays); the others become ``-inf``. logits [B, V] -> [B, V].
    """
    require_signature(fn, "fn(logits, p)", 2)
    params = [(2, 10, 1.0, 0.5), (4, 100, 3.0, 0.9), (4, 100, 3.0, 0.05), (3, 1000, 2.0, 0.95), (2, 50, 8.0, 0.3)]
    cases = _logit_cases(seed, params, "p", top_p_filter)
    return run_cases("check_top_p_filter", fn, cases, compare=compare_filtered,
                     hint="sort descending; a token goes when the probability of the tokens ranked above it "
                          "already reaches p; scatter the decision back to vocabulary order")


def check_min_p_filter(fn, seed: int = 0) -> bool:
    """Check ``fn(logits, p_base)``: the min-p filter (Nguyen et al. 2024).

    Keep the tokens with ``p_i >= p_base · max_j p_j``; the others become ``-inf``.
    logits [B, V] -> [B, V].
    """
    require_signature(fn, "fn(logits, p_base)", 2)
    params = [(2, 10, 1.0, 0.5), (4, 100, 3.0, 0.1), (4, 100, 3.0, 0.01), (3, 1000, 2.0, 0.05)]
    cases = _logit_cases(seed, params, "p_base", min_p_filter)
    return run_cases("check_min_p_filter", fn, cases, compare=compare_filtered,
                     hint="compare each probability with p_base times the row's largest probability (keepdim=True)")


def check_typical_filter(fn, seed: int = 0) -> bool:
    """Check ``fn(logits, mass)``: locally typical sampling's filter (Meister et al. 2023).

    Rank tokens by ``|-log p_i - H(p)|`` (surprisal minus entropy, most typical first) and keep
    them in that order until their probability adds up to at least ``mass`` (the token that
    crosses ``mass`` stays); the others become ``-inf``. logits [B, V] -> [B, V].
    """
    require_signature(fn, "fn(logits, mass)", 2)
    params = [(2, 10, 1.0, 0.5), (4, 100, 3.0, 0.9), (4, 100, 3.0, 0.2), (3, 1000, 2.0, 0.95)]
    cases = _logit_cases(seed, params, "mass", typical_filter)
    return run_cases("check_typical_filter", fn, cases, compare=compare_filtered,
                     hint="log_softmax gives log p; H = -(p * log p).sum(-1, keepdim=True); sort by "
                          "|-log p - H| ascending, then cut as top-p does with the probabilities in that order")


register(check_top_p_filter, "06", "nb06_sampling:my_top_p")
register(check_min_p_filter, "06", "nb06_sampling:my_min_p")
register(check_typical_filter, "06", "nb06_sampling:my_typical")
