"""A tiny random-weight ``transformers`` GPT-2 saved to a folder, offline.

It stands in for the ``gpt2`` hub checkpoint: the same files (``config.json``,
``model.safetensors``, a byte-level BPE tokenizer) at a size a test can afford.
The tokenizer has the 256 byte tokens and ``<|endoftext|>``, no merges.
"""

import json
from pathlib import Path

import torch

from randomise import randomise


def save_tiny_gpt2(folder, n_positions: int = 64, n_embd: int = 32, n_layer: int = 2, seed: int = 0) -> Path:
    """Write a random GPT-2 (vocabulary 257) and its tokenizer to ``folder``; return it."""
    import transformers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder = Path(folder)
    src = folder / "tokenizer_src"
    src.mkdir(parents=True, exist_ok=True)
    byte_chars = bytes_to_unicode()  # GPT-2 spells each byte as a printable character
    vocab = {byte_chars[b]: b for b in range(256)} | {"<|endoftext|>": 256}
    (src / "vocab.json").write_text(json.dumps(vocab))
    (src / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.GPT2Tokenizer(str(src / "vocab.json"), str(src / "merges.txt"))
    config = transformers.GPT2Config(vocab_size=257, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                                     n_head=4, bos_token_id=256, eos_token_id=256)
    torch.manual_seed(seed)
    model = randomise(transformers.GPT2LMHeadModel(config), seed=seed).eval()
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    return folder / "model"
