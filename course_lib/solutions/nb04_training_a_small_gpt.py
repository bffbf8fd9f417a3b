"""Solutions to notebook 04's exercises (training a small GPT)."""

import math

import torch


def bpe_encode(chunk, merges):
    """Start from the bytes and apply the merges in the order they were learned, each left to right."""
    ids = list(chunk)
    for k, (a, b) in enumerate(merges):
        out, i = [], 0
        while i < len(ids):
            if i + 1 < len(ids) and ids[i] == a and ids[i + 1] == b:
                out.append(256 + k)  # the pair merges[k] is token 256 + k
                i += 2
            else:
                out.append(ids[i])
                i += 1
        ids = out
    return ids


def lr_schedule(step, lr, total_steps, warmup_steps, min_lr_ratio):
    """Linear warmup to lr, then a cosine from lr to min_lr_ratio·lr at the last step."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    min_lr = min_lr_ratio * lr
    p = (step - warmup_steps) / max(1, total_steps - warmup_steps - 1)  # 0 after warmup -> 1 at the last step
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * p))


def next_token_windows(tokens, starts, block_size):
    """Inputs tokens[s : s+T] and targets tokens[s+1 : s+T+1] for each start s: two [B, T] tensors."""
    idx = starts[:, None] + torch.arange(block_size + 1)  # [B, T+1]
    window = tokens[idx]
    return window[:, :-1], window[:, 1:]
