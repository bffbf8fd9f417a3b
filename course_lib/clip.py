"""The CLIP text encoder: the transformer that turns a prompt into Stable Diffusion's condition.

Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision" (CLIP), section 2.4: the text encoder is a GPT-2-style transformer
(pre-norm blocks, causal self-attention, learned position embeddings) whose
final LayerNorm output is used. Stable Diffusion v1 (Rombach et al. 2022,
"High-Resolution Image Synthesis with Latent Diffusion Models", section 3.3)
feeds the *whole sequence* of final hidden states ``[B, 77, 768]`` to the
UNet's cross-attention layers as ``cond``.

One block is the course's pre-norm block (``transformer.TransformerBlock``, as in GPT-2):

    h = h + Attn(LN₁(h))   with a causal mask (token i sees tokens ≤ i)
    h = h + MLP(LN₂(h))    MLP = fc2(act(fc1(h))), act = quick_gelu or gelu

``quick_gelu(x) = x · σ(1.702 x)`` (``transformer.quick_gelu``) is the cheap
approximation of GELU that the original CLIP was trained with (so it must be
used with its weights).

Also here: ``from_hf`` (weights from ``transformers.CLIPTextModel``), the real
``CLIPTokenizer`` (``load_clip_tokenizer``, a local folder offline, the hub
online) and ``WordTokenizer``, a whole-word tokenizer (the offline shapes model
builds its vocabulary in ``course_lib.zoo.shapes``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .checkpoint import load_strict
from .checks import check_choice, check_int, check_number
from .transformer import TransformerBlock, quick_gelu

__all__ = [
    "CLIPTextConfig",
    "CLIPTextEncoder",
    "quick_gelu",
    "from_hf",
    "hf_key",
    "load_hf_state_dict",
    "config_from_hf",
    "load_clip_tokenizer",
    "WordTokenizer",
]

ACTIVATIONS = ("quick_gelu", "gelu")


@dataclass
class CLIPTextConfig:
    """Defaults: the ViT-L/14 text tower used by Stable Diffusion v1 (123,060,480 parameters)."""

    vocab_size: int = 49408
    width: int = 768  # d_model
    n_layers: int = 12
    n_heads: int = 12
    n_positions: int = 77  # the longest prompt, in tokens (with BOS and EOS)
    mlp_width: int = 3072
    activation: str = "quick_gelu"  # "quick_gelu" (CLIP) or "gelu" (exact, erf)
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        for name in ("vocab_size", "width", "n_layers", "n_heads", "n_positions", "mlp_width"):
            check_int(f"CLIPTextConfig.{name}", getattr(self, name), 1)
        if self.width % self.n_heads:
            raise ValueError(f"width={self.width} must be divisible by n_heads={self.n_heads}")
        check_choice("activation", self.activation, ACTIVATIONS)
        check_number("layer_norm_eps", self.layer_norm_eps, 0, low_open=True)


class CLIPTextEncoder(nn.Module):
    """Token ids ``[B, T]`` -> hidden states after the final LayerNorm ``[B, T, width]``."""

    def __init__(self, config: CLIPTextConfig | None = None):
        super().__init__()
        self.config = cfg = config if config is not None else CLIPTextConfig()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.position_embedding = nn.Embedding(cfg.n_positions, cfg.width)
        self.layers = nn.ModuleList(
            TransformerBlock(cfg.width, cfg.n_heads, cfg.mlp_width, causal=True, layer_norm_eps=cfg.layer_norm_eps,
                             activation=cfg.activation)
            for _ in range(cfg.n_layers))
        self.final_ln = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """ids: [B, T] int; attention_mask (optional): [B, T], 1 = real token, 0 = padding.

        Stable Diffusion v1 passes no attention mask (padding is seen, but thanks to
        the causal mask it never changes the states of the real tokens before it).
        """
        if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int64, torch.int32):
            raise TypeError("ids must be an integer tensor [B, T] of token ids")
        if ids.dim() != 2:
            raise ValueError(f"ids must be [B, T], got shape {tuple(ids.shape)}")
        b, t = ids.shape
        if t > self.config.n_positions:
            raise ValueError(f"prompt of {t} tokens is longer than the context of {self.config.n_positions}")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.config.vocab_size):
            raise ValueError(f"token ids must be in [0, {self.config.vocab_size}), got "
                             f"[{int(ids.min())}, {int(ids.max())}]")
        padding = None
        if attention_mask is not None:
            if tuple(attention_mask.shape) != (b, t):
                raise ValueError(f"attention_mask must be [B, T] = [{b}, {t}], got {tuple(attention_mask.shape)}")
            padding = attention_mask == 0  # [B, T], True = ignore this key
        pos = torch.arange(t, device=ids.device)
        h = self.token_embedding(ids) + self.position_embedding(pos)  # [B, T, D]
        for layer in self.layers:
            h = layer(h, key_padding_mask=padding)
        return self.final_ln(h)  # [B, T, D]


# --------------------------------------------------------------------------- Hugging Face import

# our name -> transformers' CLIPTextModel name (per layer, then the rest)
_LAYER_KEYS = {
    "ln_1": "layer_norm1", "ln_2": "layer_norm2",
    "attn.q_proj": "self_attn.q_proj", "attn.k_proj": "self_attn.k_proj",
    "attn.v_proj": "self_attn.v_proj", "attn.out_proj": "self_attn.out_proj",
    "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
}
_TOP_KEYS = {
    "token_embedding": "embeddings.token_embedding",
    "position_embedding": "embeddings.position_embedding",
    "final_ln": "final_layer_norm",
}


def hf_key(name: str) -> str:
    """Our parameter name -> the name in ``transformers.CLIPTextModel.state_dict()``."""
    module, _, leaf = name.rpartition(".")
    if module.startswith("layers."):
        _, i, rest = module.split(".", 2)
        return f"encoder.layers.{i}.{_LAYER_KEYS[rest]}.{leaf}"
    return f"{_TOP_KEYS[module]}.{leaf}"


def config_from_hf(hf_config) -> CLIPTextConfig:
    """A ``transformers.CLIPTextConfig`` (or its ``config.json`` as a dict) -> ``CLIPTextConfig``."""
    get = hf_config.get if isinstance(hf_config, dict) else (lambda k, d=None: getattr(hf_config, k, d))
    act = get("hidden_act", "quick_gelu")
    if act not in ACTIVATIONS:
        raise ValueError(f"unsupported hidden_act {act!r}; course_lib.clip supports {ACTIVATIONS}")
    return CLIPTextConfig(
        vocab_size=get("vocab_size"), width=get("hidden_size"), n_layers=get("num_hidden_layers"),
        n_heads=get("num_attention_heads"), n_positions=get("max_position_embeddings"),
        mlp_width=get("intermediate_size"), activation=act, layer_norm_eps=get("layer_norm_eps", 1e-5),
    )


def load_hf_state_dict(model: CLIPTextEncoder, state_dict: dict[str, torch.Tensor]) -> CLIPTextEncoder:
    """Copy a transformers-named state dict into ``model``, strictly (names and shapes:
    ``checkpoint.load_strict``; keys it does not know are reported under their own names).

    Accepts both the transformers 5 names and the older ``text_model.``-prefixed
    ones found in checkpoints such as Stable Diffusion v1.5's ``text_encoder/``.
    """
    ours = {hf_key(k): k for k in model.state_dict()}  # their name -> ours
    renamed = {ours.get(k.removeprefix("text_model."), k): v for k, v in state_dict.items()
               if not k.endswith("position_ids")}  # a non-learned buffer in old checkpoints
    load_strict(model, renamed, "CLIP text encoder")
    return model


def from_hf(hf_model) -> CLIPTextEncoder:
    """Build a ``CLIPTextEncoder`` with the weights of a ``transformers.CLIPTextModel``."""
    model = CLIPTextEncoder(config_from_hf(hf_model.config))
    p = next(hf_model.parameters())
    model.to(device=p.device, dtype=p.dtype)
    return load_hf_state_dict(model, hf_model.state_dict())


# --------------------------------------------------------------------------- tokenizers


def load_clip_tokenizer(path_or_repo: str = "openai/clip-vit-large-patch14", subfolder: str | None = None):
    """The real byte-pair CLIP tokenizer (``transformers.CLIPTokenizer``).

    ``path_or_repo``: a local folder, or a hub id resolved like every checkpoint of the
    course (``course_lib.hub.resolve_repo``): from the local Hugging Face cache when it
    holds the tokenizer files, downloaded when the hub is reachable, otherwise a
    ``FileNotFoundError`` naming the repository and the cache folder searched.
    """
    from transformers import CLIPTokenizer

    from .hub import CLIP_TOKENIZER_FILES, resolve_repo

    prefix = f"{subfolder}/" if subfolder else ""
    folder = resolve_repo(path_or_repo, [prefix + name for name in CLIP_TOKENIZER_FILES])
    return CLIPTokenizer.from_pretrained(str(Path(folder) / (subfolder or "")))


class WordTokenizer:
    """A whole-word tokenizer over a small fixed vocabulary (the offline shapes captions).

    ``tok(["a red circle"])`` -> ids ``[B, max_length]``: ``<bos> a red circle <eos> <pad> ...``,
    the same layout CLIP's tokenizer gives (BOS, tokens, EOS, padding to a fixed length).
    A word outside the vocabulary is an error, not silently dropped.
    """

    specials = ("<pad>", "<bos>", "<eos>")

    def __init__(self, words, max_length: int = 12):
        words = list(dict.fromkeys(words))  # unique, order kept
        if any(not isinstance(w, str) or not w or " " in w for w in words):
            raise ValueError("vocabulary words must be non-empty strings without spaces")
        if max_length < 3:
            raise ValueError(f"max_length must be >= 3 (BOS, a word, EOS), got {max_length}")
        self.vocab = list(self.specials) + [w for w in words if w not in self.specials]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_length = max_length
        self.pad_id, self.bos_id, self.eos_id = 0, 1, 2

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def words(self, text: str) -> list[str]:
        return text.lower().split()

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"a prompt must be a str, got {type(text).__name__}")
        words = self.words(text)
        unknown = [w for w in words if w not in self.index or w in self.specials]
        if unknown:
            raise ValueError(f"words {unknown} are not in the vocabulary; known words: "
                             f"{' '.join(self.vocab[len(self.specials):])}")
        if len(words) + 2 > self.max_length:
            raise ValueError(f"prompt {text!r} has {len(words)} words; at most {self.max_length - 2} fit")
        ids = [self.bos_id] + [self.index[w] for w in words] + [self.eos_id]
        return ids + [self.pad_id] * (self.max_length - len(ids))

    def __call__(self, texts) -> torch.Tensor:
        """A str or a list of str -> LongTensor [B, max_length]."""
        if isinstance(texts, str):
            texts = [texts]
        return torch.tensor([self.encode(t) for t in texts], dtype=torch.long)

    def convert_ids_to_tokens(self, ids) -> list[str]:
        return [self.vocab[int(i)] for i in ids]

    def decode(self, ids) -> str:
        return " ".join(t for t in self.convert_ids_to_tokens(ids) if t not in self.specials)

    def to_dict(self) -> dict:
        return {"words": self.vocab[len(self.specials):], "max_length": self.max_length}

    @classmethod
    def from_dict(cls, d: dict) -> "WordTokenizer":
        return cls(d["words"], d["max_length"])

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))
