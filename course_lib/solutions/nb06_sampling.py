"""Solutions to notebook 06's exercises (sampling)."""

import torch


def my_top_p(logits, p):
    """Nucleus filter: remove a token when the tokens ranked above it already hold mass p."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # [B, V], most likely first
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
    remove_sorted = mass_before >= p  # the nucleus was already complete
    remove = remove_sorted.scatter(-1, order, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, float("-inf"))


def my_min_p(logits, p_base):
    """Min-p filter: keep tokens at least p_base times as likely as the most likely one."""
    probs = logits.softmax(dim=-1)  # [B, V]
    threshold = p_base * probs.max(dim=-1, keepdim=True).values  # [B, 1]
    return logits.masked_fill(probs < threshold, float("-inf"))


def my_typical(logits, mass):
    """Locally typical filter: the tokens whose surprisal is closest to the entropy, up to mass."""
    log_p = logits.log_softmax(dim=-1)  # [B, V]
    entropy = -(log_p.exp() * log_p).sum(dim=-1, keepdim=True)  # [B, 1]
    distance = (-log_p - entropy).abs()  # [B, V]
    _, order = distance.sort(dim=-1)  # most typical first
    probs = log_p.exp().gather(-1, order)  # probabilities in that order
    mass_before = probs.cumsum(dim=-1) - probs
    remove_sorted = mass_before >= mass
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))
