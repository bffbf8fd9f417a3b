"""tiny-gpt: a small GPT-2 (the real architecture, ``course_lib.gpt2.GPTModel``)
trained on the offline English prose corpus (``course_lib.data.text``).

``load()`` returns ``(model, tokenizer)``. On first use it trains a byte-level
BPE tokenizer on the training documents, then the model (AdamW, linear warmup
and cosine decay, ``course_lib.train``), deterministically, with a progress
bar; everything is cached atomically under a name that carries a hash of the
config. The training history (losses, samples printed along the way, the final
validation loss and perplexity) is cached with it, in ``model.zoo_info``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..checkpoint import load_strict
from ..data.text import TokenWindows, load_documents, split_documents
from ..gpt2 import GPTModel, generate
from ..tokenizer import BPETokenizer
from .cache import cache_path, fingerprint, load_tensors, save_json, save_tensors

RECIPE = 1  # version of the training code; part of the cache key (raise it when training changes)

__all__ = ["TinyGPTConfig", "load", "encode_documents", "validation_loss"]


@dataclass(frozen=True)
class TinyGPTConfig:
    """Everything that determines the trained weights (it is hashed into the cache key)."""

    domain: str = "prose"
    vocab_size: int = 1024  # 256 bytes + 767 merges + <|endoftext|>
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 4
    n_positions: int = 128  # context length
    batch_size: int = 24
    steps: int = 500
    lr: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.1
    eval_every: int = 100
    seed: int = 0
    max_train_chars: int | None = None  # None: the whole training split (tests use less)
    # the corpus ships with CPython, so its text depends on the Python version
    python: str = f"{sys.version_info.major}.{sys.version_info.minor}"


def encode_documents(tokenizer: BPETokenizer, docs: list[str]) -> torch.Tensor:
    """One token stream: each document's tokens followed by ``<|endoftext|>``."""
    ids: list[int] = []
    for doc in docs:
        ids += tokenizer.encode(doc)
        ids.append(tokenizer.eot_id)
    return torch.tensor(ids, dtype=torch.long)


@torch.no_grad()
def validation_loss(model: GPTModel, tokens: torch.Tensor, block_size: int, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy (nats) over consecutive, non-overlapping windows."""
    n = (tokens.numel() - 1) // block_size
    if n < 1:
        raise ValueError(f"need more than {block_size} validation tokens, got {tokens.numel()}")
    device = next(model.parameters()).device
    x = tokens[: n * block_size].view(n, block_size)
    y = tokens[1: n * block_size + 1].view(n, block_size)
    total = 0.0
    for i in range(0, n, batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        total += F.cross_entropy(model(xb).flatten(0, 1), yb.flatten(), reduction="sum").item()
    return total / (n * block_size)


def _tokenizer(cfg: TinyGPTConfig, train_text: str) -> BPETokenizer:
    """Train the BPE tokenizer, or read it from the cache."""
    key = {k: getattr(cfg, k) for k in ("domain", "vocab_size", "max_train_chars", "python", "seed")}
    path = cache_path("tiny-gpt-tokenizer", key, ".json", data=fingerprint(train_text))
    if path.exists():
        return BPETokenizer.load(path)
    tok = BPETokenizer.train(train_text, cfg.vocab_size)
    tok.save(path)
    return tok


def _sample(model, tok, prompt: str = "The", n: int = 60) -> str:
    from ..sampling import TemperatureSampler, TopKSampler

    sampler = TopKSampler(40, TemperatureSampler(0.8, generator=torch.Generator().manual_seed(0)))
    ids = torch.tensor([tok.encode(prompt)], device=next(model.parameters()).device)
    n = min(n, model.n_positions - ids.shape[1])
    return tok.decode(generate(model, ids, n, sampler=sampler)[0].tolist())


def _build(cfg: TinyGPTConfig) -> GPTModel:
    return GPTModel(cfg.vocab_size, cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.n_positions, 1e-5)


def _train(cfg: TinyGPTConfig, tok: BPETokenizer, train_docs, val_docs, device, progress, on_sample):
    from ..train import train

    train_tokens = encode_documents(tok, train_docs)
    val_tokens = encode_documents(tok, val_docs)
    torch.manual_seed(cfg.seed)
    model = _build(cfg).to(device)
    windows = TokenWindows(train_tokens, cfg.n_positions, torch.Generator().manual_seed(cfg.seed))
    samples: list[tuple[int, str]] = []

    def loss_fn(m, batch):
        x, y = batch
        return F.cross_entropy(m(x).flatten(0, 1), y.flatten())

    def callback(step, m, loss):
        was = m.training
        m.eval()
        text = _sample(m, tok)
        m.train(was)
        samples.append((step, text))
        if on_sample is not None:
            on_sample(step, loss, text)

    t0 = time.perf_counter()
    history = train(model, loss_fn, lambda step: windows.sample(cfg.batch_size), cfg.steps,
                    lr=cfg.lr, device=device, weight_decay=cfg.weight_decay,
                    warmup_steps=cfg.warmup_steps, seed=cfg.seed,
                    eval_fn=lambda m: validation_loss(m, val_tokens, cfg.n_positions),
                    eval_every=cfg.eval_every, callback=callback, callback_every=cfg.eval_every,
                    progress=progress, desc="training tiny-gpt")
    model.eval()
    val = history["val_loss"][-1][1]
    info = {"val_loss": val, "val_perplexity": math.exp(val), "train_seconds": time.perf_counter() - t0,
            "train_tokens": train_tokens.numel(), "val_tokens": val_tokens.numel(),
            "train_loss": history["train_loss"], "lr": history["lr"],
            "val_loss_curve": history["val_loss"], "samples": samples,
            "config": dataclasses.asdict(cfg)}
    return model, info


def load(config: TinyGPTConfig | None = None, device=None, progress: bool = True,
         on_sample=None, **overrides):
    """``(GPTModel, BPETokenizer)``: the tiny GPT, trained on first use and cached.

    ``config``/``overrides``: change the recipe (a new config trains a new model).
    ``device``: where to train/put it (default CPU, the stored reference).
    ``on_sample(step, loss, text)``: called with a sample every ``eval_every``
    steps while training (not when the model comes from the cache).
    ``model.zoo_info`` holds the validation loss/perplexity, the training history
    and ``from_cache`` (whether this call loaded it instead of training it).
    """
    cfg = config if config is not None else TinyGPTConfig()
    if not isinstance(cfg, TinyGPTConfig):
        raise TypeError(f"config must be a TinyGPTConfig, got {type(cfg).__name__}")
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TinyGPTConfig)}
    if unknown:
        raise TypeError(f"unknown tiny-gpt option(s) {sorted(unknown)}; "
                        f"options: {[f.name for f in dataclasses.fields(TinyGPTConfig)]}")
    cfg = dataclasses.replace(cfg, **overrides)
    device = torch.device(device or "cpu")
    train_docs, val_docs = split_documents(load_documents(cfg.domain), seed=cfg.seed)
    if cfg.max_train_chars is not None:
        train_docs = _truncate(train_docs, cfg.max_train_chars)
    data = fingerprint(train_docs, val_docs)  # the corpus is part of the key: new text, new model
    weights, info_path = (cache_path("tiny-gpt", cfg, suffix, data=data, recipe=RECIPE)
                          for suffix in (".safetensors", ".json"))
    tok = _tokenizer(cfg, "\n\n".join(train_docs))

    if weights.exists() and info_path.exists():
        import json

        model = _build(cfg)
        state, _ = load_tensors(weights)
        load_strict(model, state, "cached tiny-gpt weights")
        model.zoo_info = {**json.loads(info_path.read_text()), "from_cache": True}
        return model.to(device).eval(), tok

    model, info = _train(cfg, tok, train_docs, val_docs, device, progress, on_sample)
    save_json(info_path, info)  # the history first: the weights file marks a finished cache entry
    save_tensors(weights, model.state_dict(), metadata={"config": dataclasses.asdict(cfg),
                                                        "val_loss": info["val_loss"]})
    model.zoo_info = {**info, "from_cache": False}
    return model, tok


def _truncate(docs: list[str], max_chars: int) -> list[str]:
    out, total = [], 0
    for d in docs:
        if total >= max_chars:
            break
        out.append(d[: max_chars - total])
        total += len(out[-1])
    return out
