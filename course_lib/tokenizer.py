"""Byte-level byte-pair encoding (BPE), as in GPT-2 (Radford et al. 2019, §2.2).

Text is UTF-8 bytes, so the 256 byte values are the starting vocabulary and
*any* input can be encoded: there is no unknown token. Training repeats one
step (Sennrich et al. 2016, "Neural Machine Translation of Rare Words with
Subword Units"): count every pair of adjacent tokens in the corpus, give the
most frequent pair a new id, and replace it everywhere. Encoding applies the
learned merges in the order they were learned.

Before BPE, text is split into chunks with GPT-2's regular expression
(contractions, runs of letters, runs of digits, runs of other symbols,
whitespace), and merges never cross chunk boundaries: "dog." and "dog!" share
the token "dog" instead of each learning its own.

Ids: ``0..255`` are the bytes, ``256..256+len(merges)-1`` the merges in order,
then the special tokens (by default ``<|endoftext|>``).
"""

from __future__ import annotations

import heapq
import json
from collections import Counter, defaultdict
from pathlib import Path

import regex

__all__ = ["GPT2_SPLIT_PATTERN", "BPETokenizer", "pretokenize"]

# GPT-2's pre-tokenising pattern (from its encoder): 's 't 're 've 'm 'll 'd,
# optional space + letters, optional space + digits, optional space + other
# symbols, whitespace not followed by a non-space, other whitespace.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOT = "<|endoftext|>"


def _as_text(data) -> str:
    """str as is; bytes decoded with ``surrogateescape``, so invalid UTF-8 survives
    the regex as lone surrogates and is restored exactly when re-encoded."""
    if isinstance(data, str):
        return data
    if isinstance(data, (bytes, bytearray)):
        return bytes(data).decode("utf-8", errors="surrogateescape")
    raise TypeError(f"text must be str or bytes, got {type(data).__name__}")


def _to_bytes(chunk: str) -> bytes:
    return chunk.encode("utf-8", errors="surrogateescape")


def pretokenize(text, pattern: str = GPT2_SPLIT_PATTERN) -> list[bytes]:
    """Split text into the chunks BPE works inside (each as bytes)."""
    return [_to_bytes(c) for c in regex.findall(pattern, _as_text(text))]


def _pairs(word):
    return zip(word, word[1:])


def _merge(word: tuple, pair: tuple, new_id: int) -> tuple:
    """Replace every occurrence of ``pair`` in ``word`` (left to right) by ``new_id``."""
    out, i, n = [], 0, len(word)
    while i < n:
        if i < n - 1 and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


class BPETokenizer:
    """A trained byte-level BPE: ``encode(text) -> list[int]``, ``decode(ids) -> str``.

    Build one with ``BPETokenizer.train(text, vocab_size)`` or ``BPETokenizer.load(path)``.
    """

    def __init__(self, merges, special_tokens=(EOT,), pattern: str = GPT2_SPLIT_PATTERN):
        self.merges = [tuple(int(i) for i in m) for m in merges]  # merges[k] -> id 256 + k
        self.pattern = pattern
        self._regex = regex.compile(pattern)
        self.vocab: list[bytes] = [bytes([i]) for i in range(256)]
        self.ranks: dict[tuple[int, int], int] = {}
        for k, (a, b) in enumerate(self.merges):
            if not (0 <= a < len(self.vocab) and 0 <= b < len(self.vocab)):
                raise ValueError(f"merge {k} = ({a}, {b}) refers to an id not defined before it")
            self.ranks[(a, b)] = k
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self.special_tokens = {s: len(self.vocab) + i for i, s in enumerate(special_tokens)}
        self._special_bytes = {i: s.encode("utf-8") for s, i in self.special_tokens.items()}
        self._cache: dict[bytes, list[int]] = {}

    # ---------------------------------------------------------------- sizes and ids
    @property
    def vocab_size(self) -> int:
        """Number of ids: 256 bytes + merges + special tokens."""
        return len(self.vocab) + len(self.special_tokens)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def eot_id(self) -> int | None:
        """Id of ``<|endoftext|>`` (None if this tokenizer has no such special token)."""
        return self.special_tokens.get(EOT)

    def token_bytes(self, i: int) -> bytes:
        """The bytes that id ``i`` stands for."""
        if i in self._special_bytes:
            return self._special_bytes[i]
        if not 0 <= i < len(self.vocab):
            raise ValueError(f"token id {i} is out of range [0, {self.vocab_size})")
        return self.vocab[i]

    # ---------------------------------------------------------------- training
    @classmethod
    def train(cls, text, vocab_size: int, pattern: str = GPT2_SPLIT_PATTERN,
              special_tokens=(EOT,), callback=None) -> "BPETokenizer":
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``.

        Pair counts are kept up to date incrementally: a merge only recounts
        the distinct chunks that contain the merged pair. Ties between equally
        frequent pairs go to the smallest pair of ids, so training is deterministic.
        ``callback(step, pair, new_id, count)`` is called after every merge.
        """
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
        n_merges = vocab_size - 256 - len(special_tokens)
        if n_merges < 0:
            raise ValueError(f"vocab_size must be >= 256 + {len(special_tokens)} special tokens "
                             f"= {256 + len(special_tokens)}, got {vocab_size}")
        chunk_counts = Counter(pretokenize(text, pattern))
        words = [tuple(c) for c in chunk_counts]  # distinct chunks as tuples of ids
        freqs = list(chunk_counts.values())
        pair_counts: dict[tuple[int, int], int] = defaultdict(int)
        where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> chunks containing it
        for w, (word, f) in enumerate(zip(words, freqs)):
            for p in _pairs(word):
                pair_counts[p] += f
                where[p].add(w)
        heap = [(-c, p) for p, c in pair_counts.items()]
        heapq.heapify(heap)
        merges = []
        while len(merges) < n_merges and heap:
            neg, pair = heapq.heappop(heap)
            if pair_counts.get(pair, 0) != -neg:  # a stale entry: the count changed since
                continue
            if -neg < 1:
                break
            new_id = 256 + len(merges)
            merges.append(pair)
            touched = set()
            for w in sorted(where.pop(pair, ())):
                word, f = words[w], freqs[w]
                for p in _pairs(word):  # take the chunk's old pairs out ...
                    pair_counts[p] -= f
                    touched.add(p)
                word = _merge(word, pair, new_id)
                words[w] = word
                for p in _pairs(word):  # ... and its new pairs in
                    pair_counts[p] += f
                    where[p].add(w)
                    touched.add(p)
            for p in touched:
                c = pair_counts[p]
                if c > 0:
                    heapq.heappush(heap, (-c, p))
                else:
                    del pair_counts[p]
            pair_counts.pop(pair, None)
            if callback is not None:
                callback(len(merges) - 1, pair, new_id, -neg)
        return cls(merges, special_tokens, pattern)

    # ---------------------------------------------------------------- encode / decode
    def _encode_chunk(self, chunk: bytes) -> list[int]:
        """Apply the merges to one chunk, always the earliest-learned applicable one first."""
        cached = self._cache.get(chunk)
        if cached is not None:
            return cached
        word = tuple(chunk)
        while len(word) > 1:
            pair = min(_pairs(word), key=lambda p: self.ranks.get(p, float("inf")))
            if pair not in self.ranks:
                break
            word = _merge(word, pair, 256 + self.ranks[pair])
        ids = list(word)
        if len(self._cache) < 200_000:
            self._cache[chunk] = ids
        return ids

    def encode(self, text, allow_special: bool = False) -> list[int]:
        """Token ids of ``text`` (str or bytes; any bytes, valid UTF-8 or not).

        With ``allow_special`` the literal string ``<|endoftext|>`` becomes its
        special id; otherwise it is encoded as ordinary text.
        """
        text = _as_text(text)
        if allow_special and self.special_tokens:
            alternatives = "|".join(regex.escape(s) for s in self.special_tokens)
            parts = regex.split(f"({alternatives})", text)
        else:
            parts = [text]
        ids: list[int] = []
        for part in parts:
            if part in self.special_tokens and allow_special:
                ids.append(self.special_tokens[part])
                continue
            for chunk in self._regex.findall(part):
                ids.extend(self._encode_chunk(_to_bytes(chunk)))
        return ids

    def decode_bytes(self, ids) -> bytes:
        """The exact bytes the ids stand for (the inverse of ``encode``)."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        return b"".join(self.token_bytes(int(i)) for i in ids)

    def decode(self, ids, errors: str = "replace") -> str:
        """Text of the ids; bytes that are not valid UTF-8 become U+FFFD (``errors="replace"``).
        Use ``decode_bytes`` for an exact round trip of arbitrary bytes."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    # ---------------------------------------------------------------- save / load
    def to_dict(self) -> dict:
        return {"type": "byte-level BPE", "pattern": self.pattern, "merges": [list(m) for m in self.merges],
                "special_tokens": list(self.special_tokens)}

    def save(self, path) -> None:
        """Save as JSON (merges, pattern, special tokens), written atomically."""
        from .checkpoint import save_json

        save_json(Path(path), self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> "BPETokenizer":
        missing = {"pattern", "merges", "special_tokens"} - set(d)
        if missing:
            raise ValueError(f"not a saved BPETokenizer: missing keys {sorted(missing)}")
        return cls(d["merges"], d["special_tokens"], d["pattern"])

    @classmethod
    def load(cls, path) -> "BPETokenizer":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def __repr__(self) -> str:
        return (f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={list(self.special_tokens)})")
