"""Scaled dot-product attention and multi-head attention, written out.

Vaswani et al. 2017, "Attention Is All You Need", eq. (1):

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V

and section 3.2.2 (multi-head attention): project to ``n_heads`` heads of width
``d_model / n_heads``, attend in each head, concatenate, project back.

Mask conventions (the same as PyTorch's, so the two can be compared):

* ``attn_mask``: bool, broadcastable to ``[B, H, T_q, T_k]``; **True = may attend**
  (as in ``F.scaled_dot_product_attention``).
* ``key_padding_mask``: bool ``[B, T_k]``; **True = this key is padding, ignore it**
  (as in ``nn.MultiheadAttention``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .kv_cache import KVCache


def causal_mask(t_q: int, t_k: int | None = None, device=None) -> torch.Tensor:
    """Bool ``[t_q, t_k]`` mask, True where query i may see key j (j ≤ i + t_k − t_q).

    With ``t_k > t_q`` (queries are the last ``t_q`` positions, as with a KV
    cache) the diagonal is shifted so every query sees itself and the past.
    """
    t_k = t_q if t_k is None else t_k
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril(diagonal=t_k - t_q)


def padding_mask(lengths, max_len: int | None = None, device=None) -> torch.Tensor:
    """Key-padding mask from sequence lengths: bool ``[B, max_len]``, True = padding.

    ``padding_mask([3, 1], 4)`` marks the last key of sequence 0 and the last
    three of sequence 1 as padding (the convention of ``key_padding_mask``).
    """
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.dim() != 1 or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must be a 1-D sequence of ints, got {lengths.dtype} of shape {tuple(lengths.shape)}")
    max_len = int(lengths.max()) if max_len is None else max_len
    if (lengths < 0).any() or (lengths > max_len).any():
        raise ValueError(f"every length must be in [0, {max_len}], got {lengths.tolist()}")
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]  # [B, T]


def scaled_dot_product_attention(q, k, v, mask=None, scale=None):
    """Attention written out; returns ``(output, weights)``.

    q: [B, H, T_q, D]   k: [B, H, T_k, D]   v: [B, H, T_k, D_v]
    mask: bool, broadcastable to [B, H, T_q, T_k], True = may attend.
    returns output [B, H, T_q, D_v] and weights [B, H, T_q, T_k] (rows sum to 1).
    A query row whose keys are all masked gets all-zero weights (not NaN).
    """
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same last dim, got {q.shape[-1]} and {k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same length, got {k.shape[-2]} and {v.shape[-2]}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # [B, H, T_q, T_k]
    if mask is not None:
        _check_mask(mask, scores.shape)
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:  # fully masked rows: softmax of all -inf is NaN; make them 0
        weights = weights.masked_fill(~mask.any(-1, keepdim=True), 0.0)
    return weights @ v, weights


def _check_mask(mask: torch.Tensor, scores_shape) -> None:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError("attention mask must be a bool tensor (True = may attend)")
    try:
        torch.broadcast_shapes(mask.shape, scores_shape)
    except RuntimeError:
        raise ValueError(
            f"attention mask of shape {tuple(mask.shape)} does not broadcast to the "
            f"scores' shape [B, H, T_q, T_k] = {tuple(scores_shape)}"
        ) from None


class MultiHeadAttention(nn.Module):
    """Multi-head attention, batch-first, for self- and cross-attention.

    x: [B, T_q, d_model]; context (cross-attention): [B, T_k, kv_dim] (default: x).

    ``use_sdpa`` switches between the written-out path above and PyTorch's fused
    ``F.scaled_dot_product_attention`` (same numbers, less memory, faster).
    With ``record_weights = True`` the next forward stores the attention weights
    ``[B, H, T_q, T_k]`` in ``last_weights`` (it then uses the written-out path).
    The written-out path computes in float32 also for a float16/bfloat16 model
    (as accurate as SDPA, whose CPU and GPU kernels accumulate in float32).
    ``upcast=True`` computes the scores, softmax and weighted sum in float32 even
    when the model runs in float16/bfloat16 (Stable Diffusion 2.1's
    ``upcast_attention``: its 64-wide heads overflow fp16 in QKᵀ otherwise).
    ``fused_qkv=True`` (self-attention only) makes q, k and v with one linear
    layer ``qkv_proj: d_model -> 3·d_model``, as GPT-2's ``c_attn``; the default
    has three, ``q_proj``/``k_proj``/``v_proj``, as CLIP and Stable Diffusion.

    Decoding with a ``KVCache`` (``forward(x, causal=True, cache=cache, layer=i)``):
    ``x`` holds only the new positions; their keys and values are stored in the
    cache and the queries attend to every cached position too.
    """

    def __init__(self, d_model: int, n_heads: int, kv_dim: int | None = None,
                 qkv_bias: bool = True, out_bias: bool = True, use_sdpa: bool = True,
                 upcast: bool = False, fused_qkv: bool = False):
        super().__init__()
        if not isinstance(n_heads, int) or n_heads < 1:
            raise ValueError(f"n_heads must be a positive int, got {n_heads!r}")
        if d_model % n_heads != 0:
            raise ValueError(
                f"d_model={d_model} is not divisible by n_heads={n_heads}; "
                f"choose n_heads among the divisors of d_model"
            )
        if fused_qkv and kv_dim not in (None, d_model):
            raise ValueError(f"fused_qkv=True is for self-attention (kv_dim = d_model = {d_model}), "
                             f"got kv_dim={kv_dim}; use fused_qkv=False for cross-attention")
        kv_dim = d_model if kv_dim is None else kv_dim
        self.d_model, self.n_heads, self.kv_dim = d_model, n_heads, kv_dim
        self.head_dim = d_model // n_heads
        self.fused_qkv = bool(fused_qkv)
        if self.fused_qkv:
            self.qkv_proj = nn.Linear(d_model, 3 * d_model, bias=qkv_bias)  # x -> [q | k | v]
        else:
            self.q_proj = nn.Linear(d_model, d_model, bias=qkv_bias)
            self.k_proj = nn.Linear(kv_dim, d_model, bias=qkv_bias)
            self.v_proj = nn.Linear(kv_dim, d_model, bias=qkv_bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=out_bias)
        self.use_sdpa = use_sdpa
        self.upcast = bool(upcast)
        self.record_weights = False
        self.last_weights: torch.Tensor | None = None

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, d_model] -> [B, H, T, head_dim]"""
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H, T, head_dim] -> [B, T, d_model]"""
        b, _, t, _ = x.shape
        return x.transpose(1, 2).reshape(b, t, self.d_model)

    def project(self, x: torch.Tensor, context: torch.Tensor | None = None):
        """Queries from x, keys and values from context (default x): three [B, H, T, head_dim]."""
        if self.fused_qkv:
            q, k, v = self.qkv_proj(x).split(self.d_model, dim=-1)  # 3 × [B, T, d_model]
        else:
            context = x if context is None else context
            q, k, v = self.q_proj(x), self.k_proj(context), self.v_proj(context)
        return self.split_heads(q), self.split_heads(k), self.split_heads(v)

    def forward(self, x, context=None, causal: bool = False, key_padding_mask=None, attn_mask=None,
                cache: KVCache | None = None, layer: int = 0):
        self._check_inputs(x, context, cache)
        q, k, v = self.project(x, context)  # [B, H, T_q, hd], 2 × [B, H, T_k, hd]
        if cache is not None:  # the cached past and the new positions: [B, H, T_past + T_q, hd]
            k, v = cache.update(layer, k, v)
        b, t_q, t_k = x.shape[0], q.shape[2], k.shape[2]
        if self.upcast:  # scores, softmax and the weighted sum in float32
            q, k, v = q.float(), k.float(), v.float()
        written_out = self.record_weights or not self.use_sdpa
        plain_causal = causal and key_padding_mask is None and attn_mask is None
        if not written_out and plain_causal and t_q in (1, t_k):
            # SDPA's fast paths: one new query may see every key; with no cached past, is_causal
            out = F.scaled_dot_product_attention(q, k, v, is_causal=t_q > 1)
        else:
            mask = self.build_mask(b, t_q, t_k, causal, key_padding_mask, attn_mask, x.device)
            if mask is not None:  # e.g. an attn_mask [3, T_q, T_k] with B = 2: say so here
                _check_mask(mask, (b, self.n_heads, t_q, t_k))
            if written_out:  # in float32 whatever the model's dtype, as SDPA's kernels accumulate
                out, weights = scaled_dot_product_attention(q.float(), k.float(), v.float(), mask)
                self.last_weights = weights.detach() if self.record_weights else None
            else:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                if mask is not None:  # match the written-out path on fully masked rows
                    out = out.masked_fill(~mask.any(-1, keepdim=True), 0.0)
        return self.out_proj(self.merge_heads(out).to(x.dtype))  # [B, T_q, d_model]

    def _check_inputs(self, x, context, cache) -> None:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must be [B, T, {self.d_model}], got {tuple(x.shape)}")
        if context is not None and (self.fused_qkv or cache is not None):
            raise ValueError("context (cross-attention) cannot be combined with "
                             + ("fused_qkv=True" if self.fused_qkv else "a KV cache")
                             + ": both are for self-attention")
        if context is not None and (context.dim() != 3 or context.shape[-1] != self.kv_dim
                                    or context.shape[0] != x.shape[0]):
            raise ValueError(
                f"context must be [B={x.shape[0]}, T_k, kv_dim={self.kv_dim}], got {tuple(context.shape)}"
            )

    @staticmethod
    def build_mask(b, t_q, t_k, causal, key_padding_mask, attn_mask, device):
        """Combine the three kinds of mask into one bool mask, True = may attend."""
        mask = None
        if causal:
            mask = causal_mask(t_q, t_k, device)  # [T_q, T_k]
        if attn_mask is not None:
            if not isinstance(attn_mask, torch.Tensor) or attn_mask.dtype != torch.bool:
                raise TypeError("attn_mask must be a bool tensor (True = may attend)")
            if attn_mask.shape[-2:] != (t_q, t_k):
                raise ValueError(
                    f"attn_mask must end in [T_q, T_k] = [{t_q}, {t_k}], got {tuple(attn_mask.shape)}"
                )
            mask = attn_mask if mask is None else mask & attn_mask
        if key_padding_mask is not None:
            if not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool:
                raise TypeError("key_padding_mask must be a bool tensor (True = padding)")
            if tuple(key_padding_mask.shape) != (b, t_k):
                raise ValueError(
                    f"key_padding_mask must be [B, T_k] = [{b}, {t_k}], got {tuple(key_padding_mask.shape)}"
                )
            keep = ~key_padding_mask[:, None, None, :]  # [B, 1, 1, T_k]
            mask = keep if mask is None else mask & keep
        return mask
