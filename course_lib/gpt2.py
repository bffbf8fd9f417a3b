"""GPT-2, written out (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners").

GPT-2 is a decoder-only transformer (Vaswani et al. 2017) with the changes of
section 2.3 of the paper:

* **pre-norm** blocks: LayerNorm *before* attention and MLP, plus a final
  LayerNorm after the last block::

      x = x + Attn(LN₁(x))            # causal multi-head self-attention
      x = x + MLP(LN₂(x))             # MLP(h) = W₂ GELU(W₁ h + b₁) + b₂, width 4·d

* **learned position embeddings** ``wpe`` (a ``[n_positions, d]`` table added to
  the token embeddings), *not* the sinusoids of Vaswani et al.;
* GELU in its tanh approximation (Hendrycks & Gimpel 2016):
  ``GELU(x) ≈ ½x(1 + tanh(√(2/π)(x + 0.044715x³)))``;
* the output head is **tied** to the token embedding: ``logits = h · wteᵀ``.

The 124M model: ``vocab_size=50257, d_model=768, n_heads=12, n_layers=12,
n_positions=1024`` → 124,439,808 parameters (the head shares ``wte``).

``from_hf`` / ``to_hf_state_dict`` convert from / to ``transformers``'
``GPT2LMHeadModel``. Its linear layers are ``Conv1D`` modules that store the
weight as ``[in, out]`` (``y = x W + b``) where ``nn.Linear`` stores
``[out, in]`` (``y = x Wᵀ + b``), so those weights are transposed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import causal_mask, scaled_dot_product_attention
from .kv_cache import KVCache

__all__ = ["GPTModel", "from_hf", "to_hf_state_dict", "from_pretrained", "generate",
           "gpt2_124m", "GPT2_124M", "KVCache", "quantize"]

# The published GPT-2 "small" configuration (the constructor arguments of GPTModel).
GPT2_124M = dict(vocab_size=50257, d_model=768, n_heads=12, n_layers=12,
                 n_positions=1024, layer_norm_epsilon=1e-5)


def _linear(in_f: int, out_f: int, lora_r: int) -> nn.Module:
    """``nn.Linear``, or a LoRA layer with the same ``.weight``/``.bias`` when ``lora_r > 0``."""
    if lora_r > 0:
        from .lora import LoRALinear

        return LoRALinear(in_f, out_f, lora_r)
    return nn.Linear(in_f, out_f)


def _embedding(n: int, d: int, lora_r: int) -> nn.Module:
    if lora_r > 0:
        from .lora import LoRAEmbedding

        return LoRAEmbedding(n, d, lora_r)
    return nn.Embedding(n, d)


class CausalSelfAttention(nn.Module):
    """Masked multi-head self-attention with GPT-2's fused q/k/v projection ``c_attn``.

    x: [B, T, d] -> [B, T, d]. With a ``KVCache`` the new keys/values are stored
    and the queries attend to every cached position as well.
    """

    def __init__(self, d_model: int, n_heads: int, lora_r: int = 0):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.c_attn = _linear(d_model, 3 * d_model, lora_r)  # x -> [q | k | v]
        self.c_proj = _linear(d_model, d_model, lora_r)
        self.record_weights = False  # set True to keep the attention weights of the next forward
        self.last_weights: torch.Tensor | None = None  # [B, H, T_q, T_k]

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)  # 3 × [B, T, d]
        q, k, v = (z.view(b, t, self.n_heads, self.head_dim).transpose(1, 2) for z in (q, k, v))
        if cache is not None:  # [B, H, T_cached + T, hd]
            k, v = cache.update(layer, k, v)
        t_k = k.shape[2]
        if self.record_weights:  # the written-out path, so the weights can be kept
            y, w = scaled_dot_product_attention(q, k, v, causal_mask(t, t_k, x.device))
            self.last_weights = w.detach()
        elif t == 1:  # one new query: it may see every key there is
            y = F.scaled_dot_product_attention(q, k, v)
        elif t == t_k:  # no cached past: the plain causal mask
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # several new queries after a cached past: shifted causal mask
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(t, t_k, x.device))
        y = y.transpose(1, 2).reshape(b, t, d)  # [B, T, d]
        return self.c_proj(y)


class MLP(nn.Module):
    """Position-wise MLP: ``c_proj(GELU_tanh(c_fc(x)))``, hidden width 4·d."""

    def __init__(self, d_model: int, lora_r: int = 0):
        super().__init__()
        self.c_fc = _linear(d_model, 4 * d_model, lora_r)
        self.c_proj = _linear(4 * d_model, d_model, lora_r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, d]
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + Attn(LN₁ x)``, then ``x + MLP(LN₂ x)``."""

    def __init__(self, d_model: int, n_heads: int, eps: float, lora_r: int = 0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model, eps=eps)
        self.attn = CausalSelfAttention(d_model, n_heads, lora_r)
        self.ln_2 = nn.LayerNorm(d_model, eps=eps)
        self.mlp = MLP(d_model, lora_r)

    def forward(self, x, cache=None, layer=0):  # [B, T, d]
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPTModel(nn.Module):
    """GPT-2: token + learned position embeddings, ``n_layers`` pre-norm blocks,
    final LayerNorm, output head tied to the token embedding.

    ``forward(ids [B, T]) -> logits [B, T, vocab_size]``.
    With ``lora_r > 0`` every linear layer and the token embedding are LoRA
    layers (``course_lib.lora``) whose fresh adapters change nothing.
    """

    def __init__(self, vocab_size: int, d_model: int, n_heads: int, n_layers: int,
                 n_positions: int, layer_norm_epsilon: float = 1e-5, lora_r: int = 0):
        super().__init__()
        for name, value in [("vocab_size", vocab_size), ("d_model", d_model), ("n_heads", n_heads),
                            ("n_layers", n_layers), ("n_positions", n_positions)]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        if isinstance(lora_r, bool) or not isinstance(lora_r, int) or lora_r < 0:
            raise ValueError(f"lora_r must be an int >= 0 (0 = no LoRA), got {lora_r!r}")
        if not layer_norm_epsilon > 0:
            raise ValueError(f"layer_norm_epsilon must be > 0, got {layer_norm_epsilon!r}")
        self.config = dict(vocab_size=vocab_size, d_model=d_model, n_heads=n_heads,
                           n_layers=n_layers, n_positions=n_positions,
                           layer_norm_epsilon=float(layer_norm_epsilon), lora_r=lora_r)
        self.vocab_size, self.n_positions, self.lora_r = vocab_size, n_positions, lora_r
        self.n_layers, self.n_heads, self.d_model = n_layers, n_heads, d_model
        self.wte = _embedding(vocab_size, d_model, lora_r)  # token embeddings (and the head)
        self.wpe = nn.Embedding(n_positions, d_model)  # learned position embeddings
        self.h = nn.ModuleList(Block(d_model, n_heads, layer_norm_epsilon, lora_r)
                               for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model, eps=layer_norm_epsilon)
        # None: the head is tied to wte. gpt2.quantize puts a separate (quantised) head here.
        self.lm_head: nn.Module | None = None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 initialisation: N(0, 0.02) weights, zero biases, and the residual
        projections (``c_proj``) scaled by 1/√(2·n_layers) (Radford et al. 2019, §2.3).
        LoRA adapters keep their own initialisation (B = 0)."""
        for name, p in self.named_parameters():
            if name.endswith(("lora_A", "lora_B")):
                continue
            if ".ln_" in name or name.startswith("ln_f"):
                nn.init.ones_(p) if name.endswith("weight") else nn.init.zeros_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
            else:
                std = 0.02 / math.sqrt(2 * self.n_layers) if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def check_ids(self, ids, start: int = 0) -> None:
        """Raise a clear error for ids that are not ``[B, T]`` integer token ids in range."""
        if not isinstance(ids, torch.Tensor):
            raise TypeError(f"ids must be a torch.Tensor of token ids [B, T], got {type(ids).__name__}")
        if ids.dim() != 2 or ids.shape[1] == 0:
            raise ValueError(f"ids must have shape [B, T] with T >= 1, got {tuple(ids.shape)}")
        if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
            raise TypeError(f"ids must be an integer tensor, got dtype {ids.dtype}")
        if start + ids.shape[1] > self.n_positions:
            raise ValueError(
                f"sequence too long: {start} cached + {ids.shape[1]} new positions = "
                f"{start + ids.shape[1]} > the context length n_positions={self.n_positions}"
            )
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.vocab_size:
            bad = hi if hi >= self.vocab_size else lo
            raise ValueError(f"token id {bad} is out of range: ids must be in [0, vocab_size="
                             f"{self.vocab_size})")

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from final hidden states: ``x · wteᵀ`` (tied). x: [B, T, d] -> [B, T, V]."""
        if self.lm_head is not None:
            return self.lm_head(x)
        if hasattr(self.wte, "attend"):  # a LoRA embedding: the head uses the adapted table
            return self.wte.attend(x)
        return F.linear(x, self.wte.weight)

    def forward(self, ids: torch.Tensor, cache: KVCache | None = None,
                last_only: bool = False) -> torch.Tensor:
        """ids [B, T] -> logits [B, T, V] (``last_only``: [B, 1, V], the next-token logits).

        With a ``cache``, ``ids`` are the positions after the ``cache.length`` cached ones.
        """
        start = 0 if cache is None else cache.length
        self.check_ids(ids, start)
        t = ids.shape[1]
        pos = torch.arange(start, start + t, device=ids.device)  # [T]
        x = self.wte(ids) + self.wpe(pos)  # [B, T, d]
        for i, block in enumerate(self.h):
            x = block(x, cache, i)
        if cache is not None:
            cache.advance(t)
        if last_only:
            x = x[:, -1:]
        return self.head(self.ln_f(x))  # [B, T, V]

    @torch.no_grad()
    def attention_maps(self, ids: torch.Tensor) -> torch.Tensor:
        """Attention weights of every layer and head: ``[n_layers, B, H, T, T]``."""
        attns = [blk.attn for blk in self.h]
        for a in attns:
            a.record_weights = True
        try:
            self(ids)
            return torch.stack([a.last_weights for a in attns])
        finally:
            for a in attns:
                a.record_weights, a.last_weights = False, None

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty KV cache for this model (``max_len`` defaults to ``n_positions``)."""
        max_len = self.n_positions if max_len is None else max_len
        p = self.wpe.weight
        return KVCache(self.n_layers, batch_size, self.n_heads, max_len,
                       self.d_model // self.n_heads, device=p.device, dtype=p.dtype)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameter count (the tied head is counted once, as in the paper)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def gpt2_124m(lora_r: int = 0, device=None) -> GPTModel:
    """The published 124M configuration (``device="meta"`` builds it without memory)."""
    with torch.device(device or "cpu"):
        return GPTModel(**GPT2_124M, lora_r=lora_r)


# ---------------------------------------------------------------- Hugging Face conversion

# (our name, HF name, transposed?) for every tensor of one block.
_BLOCK_KEYS = [
    ("ln_1.weight", "ln_1.weight", False), ("ln_1.bias", "ln_1.bias", False),
    ("attn.c_attn.weight", "attn.c_attn.weight", True), ("attn.c_attn.bias", "attn.c_attn.bias", False),
    ("attn.c_proj.weight", "attn.c_proj.weight", True), ("attn.c_proj.bias", "attn.c_proj.bias", False),
    ("ln_2.weight", "ln_2.weight", False), ("ln_2.bias", "ln_2.bias", False),
    ("mlp.c_fc.weight", "mlp.c_fc.weight", True), ("mlp.c_fc.bias", "mlp.c_fc.bias", False),
    ("mlp.c_proj.weight", "mlp.c_proj.weight", True), ("mlp.c_proj.bias", "mlp.c_proj.bias", False),
]


def _key_map(n_layers: int) -> list[tuple[str, str, bool]]:
    keys = [("wte.weight", "transformer.wte.weight", False),
            ("wpe.weight", "transformer.wpe.weight", False)]
    for i in range(n_layers):
        keys += [(f"h.{i}.{ours}", f"transformer.h.{i}.{theirs}", t) for ours, theirs, t in _BLOCK_KEYS]
    keys += [("ln_f.weight", "transformer.ln_f.weight", False),
             ("ln_f.bias", "transformer.ln_f.bias", False)]
    return keys


def _check_hf_config(cfg) -> None:
    """GPTModel implements GPT-2 as published; refuse HF configs that differ from it."""
    expected = {"activation_function": ("gelu_new", "gelu_pytorch_tanh"),
                "n_inner": (None, 4 * cfg.n_embd), "scale_attn_weights": (True,),
                "scale_attn_by_inverse_layer_idx": (False,), "add_cross_attention": (False,),
                "tie_word_embeddings": (True,)}
    bad = [f"{k}={getattr(cfg, k, None)!r} (supported: {v})" for k, v in expected.items()
           if getattr(cfg, k, v[0]) not in v]
    if bad:
        raise ValueError("this GPT-2 config is not the published architecture: " + "; ".join(bad))


@torch.no_grad()
def from_hf(hf_model, lora_r: int = 0) -> GPTModel:
    """A ``GPTModel`` with the weights of a ``transformers.GPT2LMHeadModel``.

    Config read from ``hf_model.config``; the Conv1D weights ``[in, out]`` are
    transposed to ``nn.Linear``'s ``[out, in]``. Every key is checked: a missing,
    unexpected or mis-shaped tensor raises an error naming it.
    """
    cfg = getattr(hf_model, "config", None)
    if cfg is None or not hasattr(hf_model, "transformer"):
        raise TypeError(f"from_hf expects a transformers GPT2LMHeadModel, got {type(hf_model).__name__}")
    _check_hf_config(cfg)
    p = next(hf_model.parameters())
    with torch.device(p.device):
        model = GPTModel(cfg.vocab_size, cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.n_positions,
                         cfg.layer_norm_epsilon, lora_r=lora_r).to(p.dtype)
    sd = hf_model.state_dict()
    keys = _key_map(cfg.n_layer)
    expected = {theirs for _, theirs, _ in keys} | {"lm_head.weight"}
    missing = sorted(expected - set(sd) - {"lm_head.weight"})
    unexpected = sorted(set(sd) - expected)
    if missing or unexpected:
        raise KeyError(f"GPT-2 state dict mismatch: missing {missing}, unexpected {unexpected}")
    ours = dict(model.named_parameters())
    for name, theirs, transpose in keys:
        w = sd[theirs].t() if transpose else sd[theirs]
        if ours[name].shape != w.shape:
            raise ValueError(f"shape mismatch for {theirs}: transformers {tuple(sd[theirs].shape)}, "
                             f"course_lib {name} {tuple(ours[name].shape)}")
        ours[name].copy_(w)
    if "lm_head.weight" in sd and not torch.equal(sd["lm_head.weight"], sd["transformer.wte.weight"]):
        raise ValueError("lm_head.weight differs from transformer.wte.weight: GPTModel ties them")
    return model


@torch.no_grad()
def to_hf_state_dict(model: GPTModel) -> dict[str, torch.Tensor]:
    """The inverse of ``from_hf``: a state dict that ``GPT2LMHeadModel.load_state_dict``
    accepts (Conv1D weights transposed back to ``[in, out]``, ``lm_head`` tied).

    LoRA adapters are folded in: the exported weights are ``W0 + ΔW``.
    """
    if not isinstance(model, GPTModel):
        raise TypeError(f"to_hf_state_dict expects a GPTModel, got {type(model).__name__}")
    modules = dict(model.named_modules())
    out = {}
    for name, theirs, transpose in _key_map(model.n_layers):
        mod_name, _, pname = name.rpartition(".")
        mod = modules[mod_name]
        w = getattr(mod, pname).detach()
        if pname == "weight" and hasattr(mod, "delta_weight") and not getattr(mod, "merged", True):
            w = w + mod.delta_weight().to(w.dtype)
        out[theirs] = (w.t() if transpose else w).contiguous().clone()
    out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def from_pretrained(name: str = "gpt2", lora_r: int = 0, device=None):
    """``(GPTModel, tokenizer)`` with real weights: a hub id (``"gpt2"``, ``"gpt2-medium"``) or a folder.

    The id is resolved like ``transformers`` does (``course_lib.hub.resolve_repo``): from the
    local Hugging Face cache, offline included, else downloaded when the hub is reachable.
    Neither: ``FileNotFoundError`` naming the repo and the cache folder searched (a notebook
    decides its world first, with ``course_lib.env.world(needs=["gpt2"])``).
    """
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from .hub import GPT2_FILES, resolve_repo

    folder = resolve_repo(name, GPT2_FILES)
    model = from_hf(GPT2LMHeadModel.from_pretrained(folder), lora_r=lora_r).eval()
    return (model.to(device) if device is not None else model), AutoTokenizer.from_pretrained(folder)


# ---------------------------------------------------------------- generation

def _greedy(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(dim=-1)  # [B, V] -> [B]


@torch.no_grad()
def generate(model: GPTModel, ids: torch.Tensor, max_new_tokens: int, sampler=None,
             use_cache: bool = True, eos_id: int | None = None) -> torch.Tensor:
    """Extend ``ids [B, T]`` (or ``[T]``) by up to ``max_new_tokens`` tokens.

    ``sampler``: any callable ``logits [B, V] -> ids [B]`` (``course_lib.sampling``);
    default greedy (argmax). ``use_cache``: keep past keys/values in a
    preallocated ``KVCache`` so each step runs the model on one new token only;
    the tokens are the same either way. ``eos_id``: a sequence that produced it
    is padded with it from then on; generation stops when all have.
    Returns ``[B, T + n]`` (or ``[T + n]``), ``n ≤ max_new_tokens``.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    squeeze = isinstance(ids, torch.Tensor) and ids.dim() == 1
    if squeeze:
        ids = ids[None]
    model.check_ids(ids)
    b, t = ids.shape
    if t + max_new_tokens > model.n_positions:
        raise ValueError(f"prompt of {t} tokens + max_new_tokens={max_new_tokens} = "
                         f"{t + max_new_tokens} exceeds the context length n_positions="
                         f"{model.n_positions}")
    if eos_id is not None and not 0 <= eos_id < model.vocab_size:
        raise ValueError(f"eos_id must be in [0, {model.vocab_size}), got {eos_id}")
    sampler = _greedy if sampler is None else sampler
    if not callable(sampler):
        raise TypeError(f"sampler must be callable (logits [B, V] -> ids [B]), got {type(sampler).__name__}")
    was_training = model.training
    model.eval()
    out = torch.empty(b, t + max_new_tokens, dtype=torch.long, device=ids.device)
    out[:, :t] = ids
    cache = model.new_cache(b, t + max_new_tokens) if use_cache else None
    done = torch.zeros(b, dtype=torch.bool, device=ids.device)
    n = t
    try:
        if max_new_tokens > 0:
            logits = model(out[:, :t], cache, last_only=True)[:, -1]  # [B, V]
        for step in range(max_new_tokens):
            nxt = sampler(logits)
            if not isinstance(nxt, torch.Tensor) or nxt.shape != (b,):
                raise ValueError(f"sampler must return token ids of shape [{b}], got "
                                 f"{getattr(nxt, 'shape', type(nxt).__name__)}")
            if eos_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
                done |= nxt == eos_id
            out[:, n] = nxt
            n += 1
            if (eos_id is not None and bool(done.all())) or step == max_new_tokens - 1:
                break
            if cache is not None:
                logits = model(out[:, n - 1:n], cache, last_only=True)[:, -1]
            else:
                logits = model(out[:, :n], last_only=True)[:, -1]
    finally:
        model.train(was_training)
    result = out[:, :n]
    return result[0] if squeeze else result


# ---------------------------------------------------------------- a faster CPU path

def quantize(model: GPTModel, weights: str = "fp16") -> GPTModel:
    """A copy of ``model`` for fast CPU inference, with its linear layers and head
    stored in fewer bytes (PyTorch dynamic quantisation, fbgemm kernels).

    Decoding one token at a time is limited by memory bandwidth, not arithmetic:
    every step reads every weight once and does ~2 flops with it. Fewer bytes per
    weight means fewer bytes per token:

    * ``"fp16"``: weights in float16 (2 bytes), products accumulated in fp32,
      activations stay fp32 — half the bytes, rounding error ~1e-3 relative;
    * ``"int8"``: weights in int8 (1 byte, one scale per tensor) and activations
      quantised to 8 bits on the fly — a quarter of the bytes, more error.
    """
    import copy
    import warnings

    if weights not in ("fp16", "int8"):
        raise ValueError(f"weights must be 'fp16' or 'int8', got {weights!r}")
    if model.lora_r > 0:
        raise ValueError("merge the LoRA adapters (course_lib.lora.merge_lora) before quantising")
    q = copy.deepcopy(model).float().cpu().eval()
    head = nn.Linear(q.d_model, q.vocab_size, bias=False)  # an untied copy of wte for the head
    head.weight = nn.Parameter(q.wte.weight.detach().clone(), requires_grad=False)
    q.lm_head = head
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        from torch.ao.quantization import quantize_dynamic

        dtype = torch.float16 if weights == "fp16" else torch.qint8
        return quantize_dynamic(q, {nn.Linear}, dtype=dtype)
