"""Solutions to notebook 03's exercises (GPT-2)."""

import math

import torch


def conv1d_to_linear(w, b):
    """Conv1D computes x @ w + b with w [in, out]; nn.Linear computes x @ weight.T + b, so weight = w.T."""
    return w.t(), b


def kv_cache_bytes(n_layers, batch_size, n_positions, d_model, bytes_per_value):
    """Keys and values (2) for every layer, sequence and position, d_model numbers each (all heads)."""
    return 2 * n_layers * batch_size * n_positions * d_model * bytes_per_value


def cached_attention(q, k, v, past_k, past_v):
    """Append the new keys/values to the cached ones and attend, with the causal mask shifted by T_past."""
    k_all = torch.cat([past_k, k], dim=2)  # [B, H, T_past + T_new, d]
    v_all = torch.cat([past_v, v], dim=2)
    t_past, t_new = past_k.shape[2], q.shape[2]
    scores = q @ k_all.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [B, H, T_new, T_past + T_new]
    query_pos = t_past + torch.arange(t_new)[:, None]  # [T_new, 1]: absolute positions of the queries
    key_pos = torch.arange(t_past + t_new)[None, :]  # [1, T_all]
    scores = scores.masked_fill(key_pos > query_pos, float("-inf"))
    return scores.softmax(-1) @ v_all, k_all, v_all
