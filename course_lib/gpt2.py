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

The blocks are the course's one pre-norm block (``transformer.TransformerBlock``,
notebook 02) with GPT-2's options: causal attention with one fused q/k/v
projection ``attn.qkv_proj`` and an MLP ``mlp.fc1``/``mlp.fc2`` with the tanh GELU.

``from_hf`` / ``to_hf_state_dict`` convert from / to ``transformers``'
``GPT2LMHeadModel``; ``hf_key_map`` lists every pair of names (our ``qkv_proj``
is their ``c_attn``, ``out_proj`` their ``attn.c_proj``, ``fc1``/``fc2`` their
``c_fc``/``mlp.c_proj``). Their linear layers are ``Conv1D`` modules that store
the weight as ``[in, out]`` (``y = x W + b``) where ``nn.Linear`` stores
``[out, in]`` (``y = x Wᵀ + b``), so those weights are transposed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_int, check_number
from .kv_cache import KVCache
from .lora import LoRALayer
from .lora_tools import inject_lora
from .transformer import TransformerBlock

__all__ = ["GPTConfig", "GPTModel", "from_hf", "to_hf_state_dict", "hf_key_map", "from_pretrained",
           "generate", "gpt2_124m", "GPT2_124M", "KVCache", "quantize"]

# The published GPT-2 "small" configuration (the fields of GPTConfig).
GPT2_124M = dict(vocab_size=50257, d_model=768, n_heads=12, n_layers=12,
                 n_positions=1024, layer_norm_epsilon=1e-5)


# With lora_r > 0: adapters on the blocks' linear layers and the token embedding.
LORA_TARGETS = (r"^h\.\d+\.(attn|mlp)\.", r"^wte$")


@dataclass
class GPTConfig:
    """The shape of a GPT-2 model. ``GPTConfig(**GPT2_124M)`` is the published 124M one.

    ``lora_r > 0``: every linear layer and the token embedding get a LoRA adapter of
    rank ``lora_r`` (Hu et al. 2021) and only the adapters are trainable.
    """

    vocab_size: int
    d_model: int
    n_heads: int
    n_layers: int
    n_positions: int  # the context length
    layer_norm_epsilon: float = 1e-5
    lora_r: int = 0

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_heads", "n_layers", "n_positions"):
            check_int(name, getattr(self, name), 1)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        self.layer_norm_epsilon = check_number("layer_norm_epsilon", self.layer_norm_epsilon, 0, low_open=True)
        check_int("lora_r", self.lora_r, 0, hint="0 = no LoRA")


class GPTModel(nn.Module):
    """GPT-2: token + learned position embeddings, ``n_layers`` pre-norm blocks
    (``transformer.TransformerBlock``: causal, fused q/k/v, tanh-GELU MLP),
    final LayerNorm, output head tied to the token embedding.

    ``GPTModel(config)`` with a ``GPTConfig``, or its fields directly:
    ``GPTModel(vocab_size, d_model, n_heads, n_layers, n_positions, layer_norm_epsilon, lora_r=0)``
    or ``GPTModel(**GPT2_124M)``. ``model.config`` is the ``GPTConfig``.

    ``forward(ids [B, T]) -> logits [B, T, vocab_size]``.
    With ``lora_r > 0`` the plain model is built and then every linear layer of the
    blocks and the token embedding get LoRA adapters (``lora_tools.inject_lora``):
    fresh adapters change nothing, and only the adapters are trainable.
    """

    def __init__(self, *args, **kwargs):
        super().__init__()
        if args and isinstance(args[0], GPTConfig):
            if len(args) > 1:
                raise TypeError("GPTModel(config, **changes): pass changes to the config by keyword")
            config = dataclasses.replace(args[0], **kwargs)
        else:
            config = GPTConfig(*args, **kwargs)
        self.config = c = config
        self.vocab_size, self.n_positions, self.lora_r = c.vocab_size, c.n_positions, c.lora_r
        self.n_layers, self.n_heads, self.d_model = c.n_layers, c.n_heads, c.d_model
        self.wte = nn.Embedding(c.vocab_size, c.d_model)  # token embeddings (and the head)
        self.wpe = nn.Embedding(c.n_positions, c.d_model)  # learned position embeddings
        self.h = nn.ModuleList(
            TransformerBlock(c.d_model, c.n_heads, causal=True, layer_norm_eps=c.layer_norm_epsilon,
                             activation="gelu_tanh", fused_qkv=True)
            for _ in range(c.n_layers))
        self.ln_f = nn.LayerNorm(c.d_model, eps=c.layer_norm_epsilon)
        # None: the head is tied to wte. gpt2.quantize puts a separate (quantised) head here.
        self.lm_head: nn.Module | None = None
        self.reset_parameters()
        if c.lora_r > 0:
            inject_lora(self, targets=LORA_TARGETS, r=c.lora_r, embeddings=True)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 initialisation: N(0, 0.02) weights, zero biases, and the residual
        projections (``attn.out_proj``, ``mlp.fc2``) scaled by 1/√(2·n_layers)
        (Radford et al. 2019, §2.3). LoRA adapters keep their own initialisation (B = 0)."""
        for name, p in self.named_parameters():
            if name.endswith(("lora_A", "lora_B")):
                continue
            if ".ln_" in name or name.startswith("ln_f"):
                nn.init.ones_(p) if name.endswith("weight") else nn.init.zeros_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
            else:
                residual = name.endswith(("attn.out_proj.weight", "mlp.fc2.weight"))
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * self.n_layers) if residual else 0.02)

    def check_ids(self, ids, start: int = 0, values: bool = True) -> None:
        """Raise a clear error for ids that are not ``[B, T]`` integer token ids in range.

        ``values=False`` skips the range check, the one that reads the ids
        (``min``/``max``: a device synchronisation on a GPU); ``generate`` checks
        the prompt once and trusts the tokens it produced itself.
        """
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
        if values:
            self.check_token_range(ids)

    def check_token_range(self, ids: torch.Tensor) -> None:
        """Every id in ``[0, vocab_size)`` (reads the ids: one device sync)."""
        lo, hi = torch.aminmax(ids)
        lo, hi = int(lo), int(hi)
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

    def forward(self, ids: torch.Tensor, cache: KVCache | None = None, last_only: bool = False,
                *, check_values: bool = True) -> torch.Tensor:
        """ids [B, T] -> logits [B, T, V] (``last_only``: [B, 1, V], the next-token logits).

        With a ``cache``, ``ids`` are the positions after the ``cache.length`` cached ones.
        ``check_values=False``: skip the id range check (see ``check_ids``).
        """
        start = 0 if cache is None else cache.length
        self.check_ids(ids, start, values=check_values)
        t = ids.shape[1]
        pos = torch.arange(start, start + t, device=ids.device)  # [T]
        x = self.wte(ids) + self.wpe(pos)  # [B, T, d]
        for i, block in enumerate(self.h):
            x = block(x, cache=cache, layer=i)
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


def gpt2_124m(lora_r: int = 0, device=None) -> GPTModel:
    """The published 124M configuration (``device="meta"`` builds it without memory)."""
    with torch.device(device or "cpu"):
        return GPTModel(**GPT2_124M, lora_r=lora_r)


# ---------------------------------------------------------------- Hugging Face conversion

# (our name, transformers' name, transposed?) for every tensor of one block. transformers'
# GPT-2 uses Conv1D layers, which store the weight [in, out]: those are transposed.
_BLOCK_KEYS = [
    ("ln_1.weight", "ln_1.weight", False), ("ln_1.bias", "ln_1.bias", False),
    ("attn.qkv_proj.weight", "attn.c_attn.weight", True), ("attn.qkv_proj.bias", "attn.c_attn.bias", False),
    ("attn.out_proj.weight", "attn.c_proj.weight", True), ("attn.out_proj.bias", "attn.c_proj.bias", False),
    ("ln_2.weight", "ln_2.weight", False), ("ln_2.bias", "ln_2.bias", False),
    ("mlp.fc1.weight", "mlp.c_fc.weight", True), ("mlp.fc1.bias", "mlp.c_fc.bias", False),
    ("mlp.fc2.weight", "mlp.c_proj.weight", True), ("mlp.fc2.bias", "mlp.c_proj.bias", False),
]


def hf_key_map(n_layers: int) -> list[tuple[str, str, bool]]:
    """Every tensor of a GPTModel with ``n_layers`` blocks and its name in
    ``transformers.GPT2LMHeadModel``: a list of ``(ours, theirs, transposed)``, e.g.
    ``("h.0.attn.qkv_proj.weight", "transformer.h.0.attn.c_attn.weight", True)``.
    (``lm_head.weight`` is not listed: it is ``transformer.wte.weight``, tied.)"""
    check_int("n_layers", n_layers, 1)
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
    keys = hf_key_map(cfg.n_layer)
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
    for name, theirs, transpose in hf_key_map(model.n_layers):
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
    check_int("max_new_tokens", max_new_tokens, 0)
    squeeze = isinstance(ids, torch.Tensor) and ids.dim() == 1
    if squeeze:
        ids = ids[None]
    model.check_ids(ids)  # the prompt's ids are read once, here; the model trusts the rest
    b, t = ids.shape
    if t + max_new_tokens > model.n_positions:
        raise ValueError(f"prompt of {t} tokens + max_new_tokens={max_new_tokens} = "
                         f"{t + max_new_tokens} exceeds the context length n_positions="
                         f"{model.n_positions}")
    if eos_id is not None:
        check_int("eos_id", eos_id, 0, model.vocab_size - 1)
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
            logits = model(out[:, :t], cache, last_only=True, check_values=False)[:, -1]  # [B, V]
        for step in range(max_new_tokens):
            nxt = sampler(logits)  # [B]
            if not isinstance(nxt, torch.Tensor) or nxt.shape != (b,):
                raise ValueError(f"sampler must return token ids of shape [{b}], got "
                                 f"{getattr(nxt, 'shape', type(nxt).__name__)}")
            if nxt.dtype.is_floating_point or nxt.dtype == torch.bool:
                raise TypeError(f"sampler must return integer token ids, got dtype {nxt.dtype}")
            if eos_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
                done |= nxt == eos_id
            out[:, n] = nxt
            n += 1
            if (eos_id is not None and bool(done.all())) or step == max_new_tokens - 1:
                break
            if cache is not None:  # only the new token; the past is in the cache
                logits = model(out[:, n - 1:n], cache, last_only=True, check_values=False)[:, -1]
            else:
                logits = model(out[:, :n], last_only=True, check_values=False)[:, -1]
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
    if any(isinstance(m, LoRALayer) for m in model.modules()):
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
