"""Notebook 04 (training a small GPT): checks for BPE encoding, the learning-rate schedule and
next-token windows."""

from __future__ import annotations

import torch

from ..tokenizer import BPETokenizer
from ..train import lr_at
from .core import Case, generator, register, require_signature, run_cases

__all__ = ["check_bpe_encode", "check_lr_schedule", "check_next_token_windows"]


def check_bpe_encode(fn) -> bool:
    """Check ``fn(chunk, merges) -> list of ids``: BPE-encode one chunk of bytes (one piece of the
    pre-tokenising regex) with learned merges, where ``merges[k] = (a, b)`` is the pair that
    became id ``256 + k``. The reference is ``course_lib.tokenizer.BPETokenizer`` with the same
    merges (Sennrich et al. 2016; Radford et al. 2019, §2.2).
    """
    require_signature(fn, "fn(chunk, merges)", 2)
    from ..data.text import load_corpus

    tok = BPETokenizer.train(load_corpus("prose", "train")[:20_000], 256 + 150)  # 150 merges (no special token)
    cases = []
    for text in ["The", " statement", " assertions", " __init__", "::=", "\n\n   ", " naïve", "🙂", "x"]:
        chunk = text.encode("utf-8")
        cases.append(Case(f"chunk {chunk!r}", (chunk, list(tok.merges)), tok._encode_chunk(chunk)))

    def compare(got, expected):
        if not isinstance(got, (list, tuple)):
            return f"returned {type(got).__name__}, expected a list of ids"
        got = [int(i) for i in got]
        return None if got == expected else f"got {got}, expected {expected}"

    return run_cases("check_bpe_encode", fn, cases, compare=compare,
                     hint="start from list(chunk) (the byte values); apply each merge in the order it was learned, "
                          "left to right, the pair merges[k] becoming 256 + k")


def check_lr_schedule(fn) -> bool:
    """Check ``fn(step, lr, total_steps, warmup_steps, min_lr_ratio) -> float`` against
    ``course_lib.train.lr_at``: linear warmup ``lr · (step + 1) / warmup_steps`` for
    ``step < warmup_steps``, then a cosine from ``lr`` (at ``step = warmup_steps``) down to
    ``min_lr_ratio · lr`` (at the last step, ``total_steps − 1``; Loshchilov & Hutter 2017).
    """
    require_signature(fn, "fn(step, lr, total_steps, warmup_steps, min_lr_ratio)", 5)
    cases = []
    for lr, total, warmup, ratio in [(2e-3, 500, 50, 0.1), (1.0, 20, 5, 0.0), (3e-4, 100, 0, 0.1)]:
        for step in sorted({0, 1, warmup - 1, warmup, warmup + 1, (warmup + total) // 2, total - 2, total - 1}):
            if 0 <= step < total:
                cases.append(Case(f"step {step} of {total}, warmup {warmup}, lr={lr:g}, min_lr_ratio={ratio:g}",
                                  (step, lr, total, warmup, ratio), lr_at(step, lr, total, warmup, "cosine", ratio)))

    def compare(got, expected):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            return f"returned {type(got).__name__}, expected a number"
        return None if abs(got - expected) <= 1e-9 + 1e-6 * abs(expected) else f"got {got:.6g}, expected {expected:.6g}"

    return run_cases("check_lr_schedule", fn, cases, compare=compare,
                     hint="progress p = (step − warmup_steps) / (total_steps − warmup_steps − 1) runs from 0 to 1; "
                          "lr_min + ½(lr − lr_min)(1 + cos πp)")


def check_next_token_windows(fn, seed: int = 0) -> bool:
    """Check ``fn(tokens, starts, block_size) -> (x, y)``: for each start ``s`` the window
    ``tokens[s : s + block_size]`` as input and the same window shifted by one,
    ``tokens[s + 1 : s + block_size + 1]``, as targets; both ``[len(starts), block_size]``.
    """
    require_signature(fn, "fn(tokens, starts, block_size)", 3)
    g = generator(seed)
    cases = []
    for n, b, t in [(20, 1, 4), (50, 3, 8), (200, 5, 16)]:
        tokens = torch.randint(0, 1000, (n,), generator=g)
        starts = torch.randint(0, n - t, (b,), generator=g)
        starts[0] = n - t - 1  # one window that ends at the last token
        idx = starts[:, None] + torch.arange(t + 1)  # [B, T+1]
        cases.append(Case(f"{n} tokens, {b} window{'s' * (b > 1)} of {t}", (tokens, starts.clone(), t),
                          (tokens[idx[:, :-1]], tokens[idx[:, 1:]])))
    return run_cases("check_next_token_windows", fn, cases, atol=0, rtol=0,
                     hint="index with starts[:, None] + torch.arange(block_size + 1), then split off the last/first column")


register(check_bpe_encode, "04", "nb04_training_a_small_gpt:bpe_encode")
register(check_lr_schedule, "04", "nb04_training_a_small_gpt:lr_schedule")
register(check_next_token_windows, "04", "nb04_training_a_small_gpt:next_token_windows")
