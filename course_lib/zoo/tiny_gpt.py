"""tiny-gpt: a small GPT-2 (the real architecture, ``course_lib.gpt2.GPTModel``)
trained on the offline English prose corpus (``course_lib.data.text``).

``zoo.load("tiny-gpt")`` returns ``(GPTModel, BPETokenizer)`` and follows the zoo
contract (``course_lib.zoo``). On first use it trains a byte-level BPE tokenizer
on the training documents, then the model (AdamW, linear warmup and cosine
decay, ``course_lib.train``), deterministically, with a progress bar; everything
is cached atomically under a name that carries a hash of the config, the corpus
and the recipe. The training history (losses, samples printed along the way, the
final validation loss and perplexity) is cached with the weights and shown as
``model.zoo_info``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..checkpoint import DamagedFileError
from ..data.text import TokenWindows, load_documents, split_documents
from ..device import seeded
from ..gpt2 import GPTModel, generate
from ..tokenizer import BPETokenizer
from .cache import cache_path, fingerprint
from .common import load_cached, load_or_train, make_config, training_device

RECIPE = 2  # version of the training code; part of the cache key (raise it when training changes)
SECONDS_PER_STEP = 0.23  # training on a 2-core CPU (500 steps: 1.9 min), for the line printed before training

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


def _tokenizer(cfg: TinyGPTConfig, train_text: str, retrain: bool) -> BPETokenizer:
    """Train the BPE tokenizer, or read it from the cache."""
    key = {k: getattr(cfg, k) for k in ("domain", "vocab_size", "max_train_chars", "python", "seed")}
    path = cache_path("tiny-gpt-tokenizer", key, ".json", data=fingerprint(train_text))
    if path.exists() and not retrain:
        try:
            return BPETokenizer.load(path)
        except (ValueError, KeyError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
            raise DamagedFileError(f"cached tiny-gpt tokenizer {path} is damaged ({type(exc).__name__}: {exc}); "
                                   f"delete it or call zoo.load('tiny-gpt', retrain=True)") from exc
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
    with seeded(cfg.seed):  # parameter initialisation
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


def load(config: TinyGPTConfig | dict | None = None, *, device=None, retrain: bool = False,
         progress: bool = True, on_sample=None, **overrides) -> tuple[GPTModel, BPETokenizer]:
    """``(GPTModel, BPETokenizer)``: the tiny GPT, trained on first use and cached.

    ``config``/``overrides``: change the recipe (a new config trains a new model);
    see ``course_lib.zoo`` for ``device``, ``retrain`` and ``progress``.
    ``on_sample(step, loss, text)``: called with a sample every ``eval_every``
    steps while training (not when the model comes from the cache).
    ``model.zoo_info`` holds the validation loss/perplexity, the training history
    and ``from_cache`` (whether this call loaded it instead of training it).
    """
    cfg = make_config(TinyGPTConfig, config, overrides, "tiny-gpt", extra_options=("on_sample",))
    device = training_device(device)
    train_docs, val_docs = split_documents(load_documents(cfg.domain), seed=cfg.seed)
    if cfg.max_train_chars is not None:
        train_docs = _truncate(train_docs, cfg.max_train_chars)
    data = fingerprint(train_docs, val_docs)  # the corpus is part of the key: new text, new model
    path = cache_path("tiny-gpt", cfg, data=data, recipe=RECIPE)
    tok = _tokenizer(cfg, "\n\n".join(train_docs), retrain)
    from_cache = path.exists() and not retrain

    def fit():
        model, info = _train(cfg, tok, train_docs, val_docs, device, progress, on_sample)
        return model.state_dict(), {"info": info}

    tensors, meta = load_or_train("tiny-gpt", path, fit, seed=cfg.seed, retrain=retrain, progress=progress,
                                  estimate_s=SECONDS_PER_STEP * cfg.steps)
    with torch.device("meta"):
        model = _build(cfg)
    load_cached(model, tensors, path, "tiny-gpt")
    model.zoo_info = {**meta["info"], "from_cache": from_cache}
    return model.to(device).eval(), tok


def _truncate(docs: list[str], max_chars: int) -> list[str]:
    out, total = [], 0
    for d in docs:
        if total >= max_chars:
            break
        out.append(d[: max_chars - total])
        total += len(out[-1])
    return out
