"""Solutions to notebook 01's exercises (attention)."""

import math

import torch


def my_causal_mask(T):
    """Bool [T, T]: query i may attend key j when j <= i."""
    return torch.ones(T, T, dtype=torch.bool).tril()


def my_attention(q, k, v, mask=None):
    """softmax(q kᵀ / √d) v, masked scores set to -inf; returns (output, weights)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [B, H, T_q, T_k]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(-1)
    return weights @ v, weights


def my_split_heads(x, n_heads):
    """[B, T, C] -> [B, n_heads, T, C // n_heads]: view the channels as heads, then swap T and H.

    Why ``x.view(B, n_heads, T, C // n_heads)`` is wrong although its shape is right: ``view``
    only reinterprets memory, which is laid out as [B, T, C] (token after token). Cut into
    ``n_heads`` blocks along that order, "head 0" would hold the first T/n_heads *tokens*
    (all of their channels, folded into rows) instead of the first C/n_heads channels of
    *every* token. Splitting the last axis first (``view(B, T, H, C/H)``) keeps each token's
    slice together; the transpose then only moves the head axis in front of T.
    """
    B, T, C = x.shape
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)


def my_sinusoidal(n_positions, d_model):
    """The [n_positions, d_model] table: column 2i = sin(pos / 10000^(2i/d)), column 2i+1 = cos."""
    pos = torch.arange(n_positions).float()[:, None]  # [P, 1]
    angle = pos / 10000 ** (torch.arange(0, d_model, 2).float() / d_model)  # [P, d/2]
    pe = torch.zeros(n_positions, d_model)
    pe[:, 0::2], pe[:, 1::2] = angle.sin(), angle.cos()
    return pe
