"""A tiny random-weight ``transformers`` GPT-2 saved to a folder, offline.

It stands in for the ``gpt2`` hub checkpoint: the same files (``config.json``,
``model.safetensors``, a byte-level BPE tokenizer) at a size a test can afford.
The tokenizer has a token per printable ASCII character and newline, and
``<|endoftext|>`` (no merges), so every generated token decodes to a visible
character and texts can be compared.
"""

import json
from pathlib import Path

import torch

from randomise import randomise


def save_tiny_gpt2(folder, n_positions: int = 64, n_embd: int = 32, n_layer: int = 2, seed: int = 0) -> Path:
    """Write a random GPT-2 (vocabulary 97) and its tokenizer to ``folder``; return it."""
    import transformers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder = Path(folder)
    src = folder / "tokenizer_src"
    src.mkdir(parents=True, exist_ok=True)
    byte_chars = bytes_to_unicode()  # GPT-2 spells each byte as a printable character
    ascii_bytes = [10, *range(32, 127)]
    vocab = {byte_chars[b]: i for i, b in enumerate(ascii_bytes)}
    eot = vocab["<|endoftext|>"] = len(ascii_bytes)
    (src / "vocab.json").write_text(json.dumps(vocab))
    (src / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.GPT2Tokenizer(str(src / "vocab.json"), str(src / "merges.txt"))
    config = transformers.GPT2Config(vocab_size=len(vocab), n_positions=n_positions, n_embd=n_embd,
                                     n_layer=n_layer, n_head=4, bos_token_id=eot, eos_token_id=eot)
    torch.manual_seed(seed)
    model = randomise(transformers.GPT2LMHeadModel(config), seed=seed).eval()
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    return folder / "model"


def random_peft_model(model_folder, target_modules, r: int, alpha: float, seed: int = 0, scale: float = 0.3):
    """``peft.get_peft_model`` over the GPT-2 in ``model_folder``, with random (as if trained) A and B."""
    import peft
    import transformers

    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=list(target_modules), fan_in_fan_out=True)
    model = peft.get_peft_model(transformers.GPT2LMHeadModel.from_pretrained(model_folder), config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()
