"""The offline text corpus: text that ships with every CPython installation.

Two domains:

* ``"prose"``: the English help texts of the Python language reference that
  ``help()`` shows (``pydoc_data.topics``: ~80 documents, ~0.47 MB);
* ``"python"``: Python source code, the standard library's top-level modules
  (a second domain, e.g. for the LoRA domain-shift experiment).

Documents are split into train / validation deterministically (a seeded
shuffle of the document order), so no validation text is ever trained on.
``TokenWindows`` draws random windows of tokens for language-model training:
inputs ``x [B, T]`` and targets ``y [B, T]`` = ``x`` shifted by one position.
"""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path

import torch

__all__ = ["DOMAINS", "load_documents", "split_documents", "load_corpus", "TokenWindows"]

DOMAINS = ("prose", "python")
# Source files of the "python" domain: the standard library's top-level modules,
# in sorted order, up to this many characters in all.
PYTHON_MAX_CHARS = 1_000_000


def _check_domain(domain) -> None:
    if domain not in DOMAINS:
        raise ValueError(f"unknown text domain {domain!r}; choose one of {DOMAINS}")


def load_documents(domain: str = "prose") -> list[str]:
    """The documents of a domain, in a fixed order (topic name / file name)."""
    _check_domain(domain)
    if domain == "prose":
        from pydoc_data.topics import topics

        docs = [topics[name].strip() for name in sorted(topics)]
        return list(dict.fromkeys(docs))  # some topics share one text ("if", "else"): keep it once
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs, total = [], 0
    for path in sorted(stdlib.glob("*.py")):
        if path.name.startswith(("_", "test")):
            continue
        text = path.read_text(encoding="utf-8", errors="replace").strip()
        if total + len(text) > PYTHON_MAX_CHARS:
            break
        docs.append(text)
        total += len(text)
    return docs


def split_documents(docs: list[str], val_fraction: float = 0.1, seed: int = 0):
    """``(train_docs, val_docs)``: a seeded shuffle of whole documents (at least one each)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if len(docs) < 2:
        raise ValueError(f"need at least 2 documents to split, got {len(docs)}")
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_val = min(len(docs) - 1, max(1, round(val_fraction * len(docs))))
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [docs[i] for i in train], [docs[i] for i in val]


def load_corpus(domain: str = "prose", split: str = "train", val_fraction: float = 0.1,
                seed: int = 0) -> str:
    """The domain's text as one string, documents separated by a blank line.

    ``split``: ``"train"``, ``"val"`` or ``"all"``.
    """
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    docs = load_documents(domain)
    if split != "all":
        train, val = split_documents(docs, val_fraction, seed)
        docs = train if split == "train" else val
    return "\n\n".join(docs)


class TokenWindows:
    """Random windows of a token stream, for next-token prediction.

    ``sample(batch_size)`` returns ``x, y``, both ``[B, block_size]`` (long),
    with ``y[:, i] = x[:, i + 1]`` in the original stream: the target of each
    position is the token after it. Windows start at uniformly random offsets
    drawn with ``generator`` (a ``torch.Generator``), so a seeded generator
    gives the same batches every run.
    """

    def __init__(self, tokens, block_size: int, generator: torch.Generator | None = None):
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        if tokens.dim() != 1:
            raise ValueError(f"tokens must be a 1-D sequence, got shape {tuple(tokens.shape)}")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive int, got {block_size!r}")
        if tokens.numel() < block_size + 1:
            raise ValueError(f"need more than block_size={block_size} tokens for one window, "
                             f"got {tokens.numel()}")
        self.tokens, self.block_size = tokens, block_size
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        """Number of distinct window start positions."""
        return self.tokens.numel() - self.block_size

    def sample(self, batch_size: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        starts = torch.randint(0, len(self), (batch_size,), generator=self.generator)  # [B]
        idx = starts[:, None] + torch.arange(self.block_size + 1)  # [B, T+1]
        chunk = self.tokens[idx]
        x, y = chunk[:, :-1], chunk[:, 1:]  # [B, T] each
        if device is not None:
            x, y = x.to(device), y.to(device)
        return x, y

    def batches(self, batch_size: int, n_batches: int, device=None):
        """Yield ``n_batches`` random batches ``(x, y)``."""
        for _ in range(n_batches):
            yield self.sample(batch_size, device)
