"""A preallocated key/value cache for autoregressive decoding.

When a decoder generates token ``t+1`` it needs the keys and values of every
earlier position in every layer. Those never change (causal attention: a past
position never sees the future), so recomputing them each step is wasted work:
``O(T²)`` projections for ``T`` tokens instead of ``O(T)``. The cache keeps them.

It is allocated once, at full size, so appending a step is a copy into a slice
rather than a ``torch.cat`` that reallocates the whole history every step.
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of all layers: ``k, v`` each ``[n_layers, B, H, max_len, head_dim]``.

    ``length`` counts the positions already stored. A model's forward calls
    ``update(layer, k_new, v_new)`` once per layer (all at the same offset
    ``length``) and then ``advance(T_new)`` once.
    """

    def __init__(self, n_layers: int, batch_size: int, n_heads: int, max_len: int,
                 head_dim: int, device=None, dtype=torch.float32):
        for name, value in [("n_layers", n_layers), ("batch_size", batch_size),
                            ("n_heads", n_heads), ("max_len", max_len), ("head_dim", head_dim)]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        shape = (n_layers, batch_size, n_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0

    def update(self, layer: int, k_new: torch.Tensor, v_new: torch.Tensor):
        """Store ``k_new, v_new [B, H, T_new, hd]`` after the cached positions of ``layer``.

        Returns the keys and values of all positions so far, ``[B, H, length + T_new, hd]``
        (views into the cache, no copy).
        """
        start, t_new = self.length, k_new.shape[2]
        if start + t_new > self.max_len:
            raise ValueError(
                f"KV cache is full: {start} cached + {t_new} new positions > max_len={self.max_len}"
            )
        self.k[layer, :, :, start:start + t_new] = k_new
        self.v[layer, :, :, start:start + t_new] = v_new
        return self.k[layer, :, :, :start + t_new], self.v[layer, :, :, :start + t_new]

    def advance(self, t_new: int) -> None:
        """Mark ``t_new`` more positions as stored (after every layer was updated)."""
        self.length += t_new

    def reset(self) -> None:
        """Forget everything (the memory is kept for the next prompt)."""
        self.length = 0

    def nbytes(self) -> int:
        """Memory the cache holds: 2 · n_layers · B · H · max_len · head_dim · bytes per element."""
        return self.k.numel() * self.k.element_size() * 2
