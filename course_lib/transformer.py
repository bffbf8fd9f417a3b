"""Transformer building blocks: feed-forward, pre-norm block, positional encodings.

Vaswani et al. 2017, "Attention Is All You Need":

* §3.3 position-wise feed-forward, eq. (2): ``FFN(x) = act(x W₁ + b₁) W₂ + b₂``,
  with a GELU (Hendrycks & Gimpel 2016) instead of ReLU, as GPT-2 and CLIP;
* §3.5 positional encodings: sinusoidal, ``PE(pos, 2i) = sin(pos / 10000^(2i/d))``,
  ``PE(pos, 2i+1) = cos(pos / 10000^(2i/d))``, or learned (one vector per position).

The block is **pre-norm** (as in GPT-2, Radford et al. 2019; Xiong et al. 2020):

    x = x + Attention(LayerNorm(x))
    x = x + FFN(LayerNorm(x))

It is the one block of every text transformer in the course: the tiny decoder
below (notebook 02), GPT-2 (``course_lib.gpt2``) and CLIP's text encoder
(``course_lib.clip``). ``TinyDecoder`` stacks these blocks into the smallest
decoder-only language model: token + position embedding, N causal blocks, a
final LayerNorm, a head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadAttention
from .checks import check_choice, check_number
from .kv_cache import KVCache


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """x · σ(1.702 x): the cheap approximation of GELU that CLIP was trained with
    (Radford et al. 2021; Hendrycks & Gimpel 2016, §2). Computed in float32 and
    rounded once, so half precision loses no more than one rounding."""
    x32 = x.float()
    return (x32 * torch.sigmoid(1.702 * x32)).to(x.dtype)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation (GPT-2): ½x(1 + tanh(√(2/π)(x + 0.044715x³)))."""
    return F.gelu(x, approximate="tanh")


# name -> function; "gelu" is the exact x·Φ(x) with the error function
ACTIVATIONS = {"gelu": F.gelu, "gelu_tanh": gelu_tanh, "quick_gelu": quick_gelu}


class FeedForward(nn.Module):
    """Position-wise MLP, eq. (2): ``fc2(act(fc1(x)))``, [B, T, d_model] -> [B, T, d_model].

    d_hidden defaults to 4 × d_model (the paper's 512 -> 2048). ``activation``:
    ``"gelu"`` (exact, erf), ``"gelu_tanh"`` (GPT-2) or ``"quick_gelu"`` (CLIP).
    """

    def __init__(self, d_model: int, d_hidden: int | None = None, activation: str = "gelu",
                 dropout: float = 0.0, bias: bool = True):
        super().__init__()
        d_hidden = 4 * d_model if d_hidden is None else d_hidden
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        self.fc1 = nn.Linear(d_model, d_hidden, bias=bias)
        self.fc2 = nn.Linear(d_hidden, d_model, bias=bias)
        self.dropout = check_number("dropout", dropout, 0.0, 1.0)  # applied in training mode only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = ACTIVATIONS[self.activation](self.fc1(x))  # [B, T, d_hidden]
        return F.dropout(self.fc2(h), self.dropout, self.training)  # [B, T, d_model]

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}" + (f", dropout={self.dropout}" if self.dropout else "")


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: ``x + Attn(ln_1(x))``, then ``x + MLP(ln_2(x))``.

    ``causal=True`` makes it a decoder block (position t sees positions ≤ t).
    ``activation`` is the MLP's (see ``FeedForward``); ``fused_qkv`` and ``use_sdpa``
    go to the attention (``MultiHeadAttention``).
    ``forward(x, key_padding_mask=None, attn_mask=None, cache=None, layer=0)``:
    x [B, T, d_model]; with a ``KVCache``, x holds the new positions only.
    Set ``block.attn.record_weights = True`` to keep the attention weights of the
    next forward in ``block.attn.last_weights`` ([B, H, T, T]).
    """

    def __init__(self, d_model: int, n_heads: int, d_hidden: int | None = None, dropout: float = 0.0,
                 causal: bool = False, layer_norm_eps: float = 1e-5, bias: bool = True,
                 use_sdpa: bool = True, activation: str = "gelu", fused_qkv: bool = False):
        super().__init__()
        self.causal = causal
        self.ln_1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.attn = MultiHeadAttention(d_model, n_heads, qkv_bias=bias, out_bias=bias, use_sdpa=use_sdpa,
                                       fused_qkv=fused_qkv)
        self.ln_2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.mlp = FeedForward(d_model, d_hidden, activation, dropout=dropout, bias=bias)
        self.dropout = dropout  # on the attention output, in training mode only

    def forward(self, x, key_padding_mask=None, attn_mask=None, cache: KVCache | None = None, layer: int = 0):
        h = self.attn(self.ln_1(x), causal=self.causal, key_padding_mask=key_padding_mask,
                      attn_mask=attn_mask, cache=cache, layer=layer)
        x = x + F.dropout(h, self.dropout, self.training)  # [B, T, d_model]
        return x + self.mlp(self.ln_2(x))  # [B, T, d_model]


# ----------------------------------------------------------------------------- positions


def sinusoidal_encoding(n_positions: int, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """The table of §3.5: [n_positions, d_model]; even columns sin, odd columns cos."""
    if d_model % 2 != 0:
        raise ValueError(f"sinusoidal encodings pair sin/cos columns, so d_model must be even, got {d_model}")
    pos = torch.arange(n_positions, dtype=torch.float32)[:, None]  # [P, 1]
    inv_freq = torch.exp(-math.log(base) * torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)  # [d/2]
    pe = torch.zeros(n_positions, d_model)
    pe[:, 0::2] = torch.sin(pos * inv_freq)
    pe[:, 1::2] = torch.cos(pos * inv_freq)
    return pe


class _PositionalEncoding(nn.Module):
    """Shared interface: ``forward(x)`` returns x + P[:T]; ``table`` is P [max_len, d_model]."""

    max_len: int

    def _check(self, x: torch.Tensor) -> int:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must be [B, T, {self.d_model}], got {tuple(x.shape)}")
        if x.shape[1] > self.max_len:
            raise ValueError(f"sequence length {x.shape[1]} exceeds max_len={self.max_len} positions")
        return x.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self._check(x)
        return x + self.table[:t].to(x.dtype)  # [B, T, d_model]


class SinusoidalPositionalEncoding(_PositionalEncoding):
    """Fixed sin/cos encodings (Vaswani et al. 2017, §3.5); no parameters."""

    def __init__(self, d_model: int, max_len: int = 512, base: float = 10000.0):
        super().__init__()
        self.d_model, self.max_len = d_model, max_len
        self.register_buffer("pe", sinusoidal_encoding(max_len, d_model, base), persistent=False)

    @property
    def table(self) -> torch.Tensor:
        return self.pe  # [max_len, d_model]


class LearnedPositionalEncoding(_PositionalEncoding):
    """One trained vector per position (as in GPT-2); initialised N(0, 0.02²)."""

    def __init__(self, d_model: int, max_len: int = 512):
        super().__init__()
        self.d_model, self.max_len = d_model, max_len
        self.weight = nn.Parameter(torch.randn(max_len, d_model) * 0.02)

    @property
    def table(self) -> torch.Tensor:
        return self.weight  # [max_len, d_model]


POSITIONAL = {"learned": LearnedPositionalEncoding, "sinusoidal": SinusoidalPositionalEncoding}


# ----------------------------------------------------------------------------- a tiny decoder


class TinyDecoder(nn.Module):
    """A decoder-only transformer small enough to train on a CPU in a minute.

    ids [B, T] -> logits [B, T, vocab_size]. ``forward(ids, return_attention=True)``
    also returns every layer's attention weights, a list of [B, H, T, T].
    """

    def __init__(self, vocab_size: int, d_model: int = 64, n_heads: int = 4, n_layers: int = 2,
                 max_len: int = 64, d_hidden: int | None = None, dropout: float = 0.0,
                 positional: str = "learned"):
        super().__init__()
        if positional not in POSITIONAL:
            raise ValueError(f"positional must be one of {sorted(POSITIONAL)}, got {positional!r}")
        self.vocab_size, self.max_len = vocab_size, max_len
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_enc = POSITIONAL[positional](d_model, max_len)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, d_hidden, dropout, causal=True) for _ in range(n_layers)
        )
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:  # GPT-2 style: N(0, 0.02²) weights, zero biases
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, ids: torch.Tensor, return_attention: bool = False):
        if ids.dim() != 2 or ids.dtype not in (torch.long, torch.int32, torch.int64):
            raise ValueError(f"ids must be an integer tensor [B, T], got {ids.dtype} {tuple(ids.shape)}")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"token ids must be in [0, {self.vocab_size}), got [{int(ids.min())}, {int(ids.max())}]")
        x = self.dropout(self.pos_enc(self.tok_emb(ids)))  # [B, T, d_model]
        maps = []
        for block in self.blocks:
            if return_attention:
                recording = block.attn.record_weights
                block.attn.record_weights = True
                x = block(x)
                maps.append(block.attn.last_weights)  # [B, H, T, T]
                block.attn.record_weights = recording
            else:
                x = block(x)
        logits = self.head(self.ln_f(x))  # [B, T, vocab_size]
        return (logits, maps) if return_attention else logits

    @torch.no_grad()
    def attention_maps(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's attention weights for ``ids``: a list of [B, H, T, T] (eval mode)."""
        was_training = self.training
        self.eval()
        _, maps = self(ids, return_attention=True)
        self.train(was_training)
        return maps
