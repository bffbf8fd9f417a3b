"""Choosing the next token: greedy, temperature, top-k, nucleus, min-p, repetition penalty.

A sampler maps next-token logits ``[B, V]`` to token ids ``[B]``. Samplers
that draw at random (``TemperatureSampler``) take an optional
``torch.Generator`` so draws are reproducible. Filters wrap an inner sampler:
they remove tokens (set their logits to ``-inf``) and hand the rest on::

    sampler = NucleusSampler(0.95, TemperatureSampler(0.8, generator=g))
    ids = sampler(logits)           # [B, V] -> [B]

A filter sees the logits *before* the inner sampler divides them by its
temperature. (Hugging Face ``generate`` applies the temperature first; to
reproduce that, pass ``logits / t`` to a filter wrapping ``TemperatureSampler(1.0)``.)

References: temperature — Ackley, Hinton & Sejnowski 1985 (Boltzmann
distribution p_i ∝ exp(z_i / T)); top-k — Fan, Lewis & Dauphin 2018;
nucleus — Holtzman et al. 2020, eq. (2)-(3); min-p — Nguyen et al. 2024;
locally typical sampling — Meister et al. 2023 (TACL); repetition penalty —
Keskar et al. 2019 (CTRL), section 4.1.
The pure filters ``top_k_filter``/``top_p_filter``/``min_p_filter``/``typical_filter``
give the same result as ``transformers``' ``TopKLogitsWarper``/``TopPLogitsWarper``/
``MinPLogitsWarper``/``TypicalLogitsWarper``, ties included.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch

from .checks import check_generator, check_int, check_number, check_probability

__all__ = ["Sampler", "GreedySampler", "TemperatureSampler", "LogitsFilter", "TopKSampler",
           "NucleusSampler", "MinPSampler", "TypicalSampler", "RepetitionPenaltySampler",
           "top_k_filter", "top_p_filter", "min_p_filter", "typical_filter", "apply_repetition_penalty",
           "distinct_n", "repetition_rate"]

FILTER_VALUE = -float("inf")


# ---------------------------------------------------------------- checks

def _check_logits(logits) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape [batch, vocab], got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
    if logits.shape[-1] == 0:
        raise ValueError("logits have an empty vocabulary dimension")
    return logits


# ---------------------------------------------------------------- pure filters

def top_k_filter(logits: torch.Tensor, k: int, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Keep the ``k`` largest logits per row, set the rest to ``-inf`` (Fan et al. 2018).

    A token tied with the k-th largest logit is kept too, so a row may keep more
    than ``k`` tokens (as ``transformers.TopKLogitsWarper``). ``k`` larger than
    the vocabulary keeps everything. logits: [B, V] -> [B, V].
    """
    _check_logits(logits)
    k = max(check_int("k", k, 1), check_int("min_tokens_to_keep", min_tokens_to_keep, 1))
    k = min(k, logits.shape[-1])
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]  # [B, 1]
    return logits.masked_fill(logits < kth_largest, FILTER_VALUE)


def top_p_filter(logits: torch.Tensor, p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Nucleus filter (Holtzman et al. 2020, eq. 2): keep the smallest set of most
    likely tokens whose probability adds up to at least ``p``.

    Computed from the unlikely end, exactly as ``transformers.TopPLogitsWarper``:
    sort ascending, drop tokens while the cumulative probability is ≤ 1 - p,
    always keep the ``min_tokens_to_keep`` most likely. logits: [B, V] -> [B, V].
    """
    _check_logits(logits)
    p = check_probability("p", p)
    min_tokens_to_keep = check_int("min_tokens_to_keep", min_tokens_to_keep, 1)
    sorted_logits, order = torch.sort(logits, descending=False)  # [B, V], least likely first
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # [B, V]
    drop_sorted = cumulative <= (1 - p)  # the unlikely tail holding at most 1 - p of the mass
    drop_sorted[..., -min_tokens_to_keep:] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, FILTER_VALUE)


def min_p_filter(logits: torch.Tensor, p_base: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Min-p filter (Nguyen et al. 2024): drop tokens with probability below
    ``p_base · max_i p_i``; the cut scales with the model's confidence.

    Same result as ``transformers.MinPLogitsWarper``. logits: [B, V] -> [B, V].
    """
    _check_logits(logits)
    p_base = check_probability("min_p", p_base)
    min_tokens_to_keep = check_int("min_tokens_to_keep", min_tokens_to_keep, 1)
    probs = logits.softmax(dim=-1)  # [B, V]
    drop = probs < p_base * probs.amax(dim=-1, keepdim=True)
    keep = torch.topk(probs, min(min_tokens_to_keep, probs.shape[-1]), dim=-1).indices
    drop.scatter_(-1, keep, False)
    return logits.masked_fill(drop, FILTER_VALUE)


def typical_filter(logits: torch.Tensor, mass: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Locally typical filter (Meister et al. 2023, "Locally Typical Sampling"): keep the tokens
    whose surprisal ``-log p_i`` is closest to the entropy ``H(p) = -Σ_j p_j log p_j``.

    Tokens are ranked by ``|-log p_i - H(p)|`` (most typical first) and kept in that order
    until their probability adds up to at least ``mass``; the token that crosses ``mass``
    stays, and so does every token tied with it. Unlike top-p, a very likely token can be
    dropped when the distribution is flat elsewhere (its surprisal is far below the entropy).
    Same result as ``transformers.TypicalLogitsWarper``. logits: [B, V] -> [B, V].
    """
    _check_logits(logits)
    mass = check_probability("mass", mass)
    min_tokens_to_keep = check_int("min_tokens_to_keep", min_tokens_to_keep, 1)
    log_p = logits.log_softmax(dim=-1)  # [B, V]
    entropy = -(log_p.exp() * log_p).nansum(dim=-1, keepdim=True)  # [B, 1]; 0 · log 0 counts as 0
    distance = (-log_p - entropy).abs()  # [B, V]: how far each surprisal is from the entropy
    distance_sorted, order = torch.sort(distance, descending=False)  # most typical first
    cumulative = logits.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)  # [B, V]
    crossing = (cumulative < mass).sum(dim=-1, keepdim=True).clamp(max=logits.shape[-1] - 1)  # [B, 1]
    drop_sorted = distance_sorted > distance_sorted.gather(-1, crossing)  # farther than the crossing token
    drop_sorted[..., :min_tokens_to_keep] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, FILTER_VALUE)


def apply_repetition_penalty(logits: torch.Tensor, context: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty (Keskar et al. 2019, §4.1), as in ``transformers``:
    for every token already in ``context`` a positive logit is divided by
    ``penalty`` and a negative one multiplied by it (penalty > 1 discourages
    repeats). logits: [B, V], context: [B, T] ids -> [B, V].
    """
    _check_logits(logits)
    penalty = check_number("penalty", penalty, 0, low_open=True, hint="1 = no penalty")
    if not isinstance(context, torch.Tensor) or context.dim() != 2 or context.shape[0] != logits.shape[0]:
        raise ValueError(f"context must be an id tensor [batch={logits.shape[0]}, T], got "
                         f"{tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__}")
    if context.numel() and (context.min() < 0 or context.max() >= logits.shape[-1]):
        raise ValueError(f"context ids must be in [0, {logits.shape[-1]}), got "
                         f"[{int(context.min())}, {int(context.max())}]")
    context = context.to(logits.device, torch.long)
    seen = logits.gather(-1, context)  # [B, T]
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(-1, context, seen)


# ---------------------------------------------------------------- samplers

class Sampler:
    """Base class: ``sampler(logits [B, V]) -> ids [B]``."""

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def distribution(self, logits: torch.Tensor) -> torch.Tensor:
        """The probabilities this sampler draws from, [B, V] (one-hot for greedy)."""
        raise NotImplementedError


class GreedySampler(Sampler):
    """Always the most likely token (the first one among equals)."""

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return _check_logits(logits).argmax(dim=-1)  # [B]

    def distribution(self, logits: torch.Tensor) -> torch.Tensor:
        ids = self(logits)
        return torch.zeros_like(logits).scatter_(-1, ids[:, None], 1.0)

    def __repr__(self) -> str:
        return "GreedySampler()"


class TemperatureSampler(Sampler):
    """Draw from ``softmax(logits / t)``: t < 1 sharpens, t > 1 flattens, t = 1 is the model.

    ``generator`` (a ``torch.Generator``) makes draws reproducible; draws happen
    on the generator's device.
    """

    def __init__(self, t: float = 1.0, generator: torch.Generator | None = None):
        self.t = check_number("temperature t", t, 0, low_open=True, hint="use GreedySampler for t -> 0")
        self.generator = check_generator(generator)

    def distribution(self, logits: torch.Tensor) -> torch.Tensor:
        return (_check_logits(logits).float() / self.t).softmax(dim=-1)  # [B, V]

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        probs = self.distribution(logits)
        if torch.isnan(probs).any():
            raise ValueError("logits give NaN probabilities (NaN logits, or every token filtered out)")
        device = self.generator.device if self.generator is not None else probs.device
        ids = torch.multinomial(probs.to(device), 1, generator=self.generator)  # [B, 1]
        return ids[:, 0].to(logits.device)

    def __repr__(self) -> str:
        return f"TemperatureSampler(t={self.t:g})"


class LogitsFilter(Sampler):
    """A sampler that removes tokens from the logits, then asks ``sampler`` to choose."""

    def __init__(self, sampler: Sampler | None = None):
        if sampler is None:
            sampler = TemperatureSampler(1.0)
        if not callable(sampler):
            raise TypeError(f"sampler must be a Sampler (callable on logits), got {type(sampler).__name__}")
        self.sampler = sampler

    def filter(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return self.sampler(self.filter(logits))

    def distribution(self, logits: torch.Tensor) -> torch.Tensor:
        return self.sampler.distribution(self.filter(logits))


class TopKSampler(LogitsFilter):
    """Keep the k most likely tokens (ties with the k-th kept), then ``sampler`` draws."""

    def __init__(self, k: int, sampler: Sampler | None = None):
        super().__init__(sampler)
        self.k = check_int("k", k, 1)

    def filter(self, logits):
        return top_k_filter(logits, self.k)

    def __repr__(self) -> str:
        return f"TopKSampler(k={self.k}, {self.sampler!r})"


class NucleusSampler(LogitsFilter):
    """Keep the smallest set of likely tokens with total probability ≥ p (Holtzman et al. 2020)."""

    def __init__(self, p: float, sampler: Sampler | None = None):
        super().__init__(sampler)
        self.p = check_probability("p", p)

    def filter(self, logits):
        return top_p_filter(logits, self.p)

    def __repr__(self) -> str:
        return f"NucleusSampler(p={self.p:g}, {self.sampler!r})"


class MinPSampler(LogitsFilter):
    """Keep tokens with probability ≥ p_base · (top probability) (Nguyen et al. 2024)."""

    def __init__(self, p_base: float, sampler: Sampler | None = None):
        super().__init__(sampler)
        self.p_base = check_probability("min_p", p_base)

    def filter(self, logits):
        return min_p_filter(logits, self.p_base)

    def __repr__(self) -> str:
        return f"MinPSampler(p_base={self.p_base:g}, {self.sampler!r})"


class TypicalSampler(LogitsFilter):
    """Keep the locally typical tokens up to probability ``mass`` (Meister et al. 2023), then ``sampler`` draws."""

    def __init__(self, mass: float, sampler: Sampler | None = None):
        super().__init__(sampler)
        self.mass = check_probability("mass", mass)

    def filter(self, logits):
        return typical_filter(logits, self.mass)

    def __repr__(self) -> str:
        return f"TypicalSampler(mass={self.mass:g}, {self.sampler!r})"


class RepetitionPenaltySampler(LogitsFilter):
    """Penalise tokens already seen (Keskar et al. 2019), then ``sampler`` draws.

    The context is the prompt given to ``reset(prompt_ids)`` plus every token
    this sampler has returned since; so it works inside any generation loop
    that calls ``sampler(logits)`` once per step. Call ``reset`` before each
    new generation.
    """

    def __init__(self, penalty: float, sampler: Sampler | None = None):
        super().__init__(sampler)
        self.penalty = check_number("penalty", penalty, 0, low_open=True,
                                    hint="1 = no penalty, > 1 discourages repeats")
        self.context: torch.Tensor | None = None  # [B, T] ids seen so far

    def reset(self, prompt_ids: torch.Tensor | None = None) -> "RepetitionPenaltySampler":
        if prompt_ids is not None and (not isinstance(prompt_ids, torch.Tensor) or prompt_ids.dim() != 2):
            raise ValueError("prompt_ids must be an id tensor [B, T] or None")
        self.context = None if prompt_ids is None else prompt_ids.detach().long()
        return self

    def filter(self, logits):
        if self.context is None or self.context.shape[1] == 0:
            return _check_logits(logits)
        if self.context.shape[0] != logits.shape[0]:
            raise ValueError(f"batch size changed from {self.context.shape[0]} to {logits.shape[0]}: "
                             "call reset() before a new generation")
        return apply_repetition_penalty(logits, self.context, self.penalty)

    def __call__(self, logits):
        ids = super().__call__(logits)  # [B]
        new = ids.detach().long().cpu()[:, None]
        self.context = new if self.context is None else torch.cat([self.context.cpu(), new], dim=1)
        return ids

    def __repr__(self) -> str:
        return f"RepetitionPenaltySampler(penalty={self.penalty:g}, {self.sampler!r})"


# ---------------------------------------------------------------- text statistics

def _ngrams(seq: Sequence, n: int):
    return [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]


def distinct_n(sequences: Sequence[Sequence], n: int = 2) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / all n-grams over the sequences.

    Sequences are token-id lists (or strings split into words). 1.0: no n-gram
    repeats; near 0: the same phrases over and over.
    """
    n = check_int("n", n, 1)
    grams = [g for s in sequences for g in _ngrams(list(s), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(sequence: Sequence, n: int = 4) -> float:
    """Share of the n-grams in one sequence that already occurred earlier in it."""
    n = check_int("n", n, 1)
    grams = _ngrams(list(sequence), n)
    if not grams:
        return 0.0
    counts = Counter(grams)
    return sum(c - 1 for c in counts.values()) / len(grams)
