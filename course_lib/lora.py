"""LoRA: low-rank adaptation of a frozen layer (Hu et al. 2021, arXiv:2106.09685).

A pretrained weight ``W0`` stays frozen; only a low-rank update is learned:

    h = W0 x + ΔW x = W0 x + (α / r) · B A x          (Hu et al. 2021, eq. 3)

with ``A ∈ R^{r×in}``, ``B ∈ R^{out×r}`` and ``r ≪ min(in, out)``. ``B`` starts
at zero, so a fresh adapter leaves the model exactly as it was, and the update
is scaled by ``α / r`` so that changing ``r`` needs no new learning rate.

After training, ``ΔW`` can be folded into ``W0`` (``merge_lora``): the merged
model is a plain model with the same outputs and no extra inference cost.

The layers here are drop-in replacements for ``nn.Linear`` / ``nn.Embedding``:
same ``.weight`` (and ``.bias``) names and shapes, so pretrained weights load
into them unchanged. Tools that inject adapters into an existing model, save
and load the adapter alone and merge/unmerge in place are in
``course_lib.lora_tools``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["LoRALinear", "LoRAEmbedding", "LoRALayer", "merge_lora", "lora_state_dict",
           "is_lora_key"]

ADAPTER_NAMES = ("lora_A", "lora_B")


def _check_dim(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _check_rank_alpha(r, alpha) -> tuple[int, float]:
    if isinstance(r, bool) or not isinstance(r, int):
        raise TypeError(f"LoRA rank r must be an int >= 1, got {type(r).__name__}")
    if r < 1:
        raise ValueError(f"LoRA rank r must be >= 1, got r={r} "
                         "(r = 0 means no adapter: use a plain nn.Linear / nn.Embedding)")
    if alpha is None:
        alpha = r
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"LoRA alpha must be a number > 0 (or None for alpha = r), "
                        f"got {type(alpha).__name__}")
    if not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"LoRA alpha must be a finite number > 0, got {alpha}")
    return r, float(alpha)


class LoRALayer(nn.Module):
    """What LoRALinear and LoRAEmbedding share: rank, scaling, merge/unmerge in place.

    ``merge()`` adds ``ΔW`` into the frozen weight and makes ``forward`` skip
    the adapter; ``unmerge()`` subtracts it again (exact up to float rounding).
    """

    r: int
    alpha: float
    merged: bool

    @property
    def scaling(self) -> float:
        """α / r, the factor in front of B A (Hu et al. 2021, eq. 3)."""
        return self.alpha / self.r

    def delta_weight(self) -> torch.Tensor:
        """ΔW = (α/r) · B A, in the shape of ``self.weight``."""
        raise NotImplementedError

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ΔW into the frozen weight, in place; ``forward`` then skips the adapter."""
        if self.merged:
            raise RuntimeError(f"{type(self).__name__} is already merged")
        self.weight += self.delta_weight().to(self.weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo ``merge()``: subtract ΔW from the weight and use the adapter again."""
        if not self.merged:
            raise RuntimeError(f"{type(self).__name__} is not merged")
        self.weight -= self.delta_weight().to(self.weight.dtype)
        self.merged = False

    def adapter_parameters(self) -> int:
        """Number of trainable adapter parameters (r · (in + out))."""
        return self.lora_A.numel() + self.lora_B.numel()


class LoRALinear(LoRALayer):
    """A frozen ``nn.Linear`` plus a trainable low-rank update (Hu et al. 2021, eq. 3).

    ``y = x W0ᵀ + b + (α/r) · (x Aᵀ) Bᵀ``

    Parameters: ``weight [out_f, in_f]`` and ``bias [out_f]`` (frozen, same
    names as ``nn.Linear``), ``lora_A [r, in_f]`` (Kaiming-uniform, as
    ``nn.Linear`` and ``peft``), ``lora_B [out_f, r]`` (zeros).
    """

    def __init__(self, in_f: int, out_f: int, r: int, alpha: float | None = None,
                 bias: bool = True, *, dropout: float = 0.0, device=None, dtype=None):
        super().__init__()
        self.in_features = _check_dim("in_f", in_f)
        self.out_features = _check_dim("out_f", out_f)
        self.r, self.alpha = _check_rank_alpha(r, alpha)
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be True or False, got {type(bias).__name__}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        kw = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_f, in_f, **kw), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_f, **kw), requires_grad=False) if bias else None
        self.lora_A = nn.Parameter(torch.empty(self.r, in_f, **kw))
        self.lora_B = nn.Parameter(torch.empty(out_f, self.r, **kw))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Base weights as ``nn.Linear`` initialises them; A random, B = 0."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)
        self.reset_adapter()

    @torch.no_grad()
    def reset_adapter(self) -> None:
        """A fresh adapter: A Kaiming-uniform, B zero, so ΔW = 0."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)
        self.merged = False

    @classmethod
    def from_linear(cls, linear: nn.Linear, r: int, alpha: float | None = None,
                    dropout: float = 0.0) -> "LoRALinear":
        """Wrap an existing ``nn.Linear``: its weight and bias are reused (and frozen)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear expects an nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, r, alpha,
                    bias=linear.bias is not None, dropout=dropout, device=w.device, dtype=w.dtype)
        layer.weight = linear.weight  # the same Parameter: ties to it are kept
        layer.weight.requires_grad_(False)
        if linear.bias is not None:
            layer.bias = linear.bias
            layer.bias.requires_grad_(False)
        return layer

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling  # [out, in]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [..., in_f]
        y = F.linear(x, self.weight, self.bias)  # [..., out_f]
        if self.merged:
            return y
        update = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)  # [..., out_f]
        return y + update * self.scaling

    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` with ΔW folded in (shares the weight Parameter)."""
        if not self.merged:
            self.merge()
        w = self.weight
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device="meta", dtype=w.dtype)
        linear.weight = w
        if self.bias is not None:
            linear.bias = self.bias
        return linear

    def extra_repr(self) -> str:
        return (f"in_f={self.in_features}, out_f={self.out_features}, r={self.r}, "
                f"alpha={self.alpha:g}, bias={self.bias is not None}, merged={self.merged}")


class LoRAEmbedding(LoRALayer):
    """A frozen ``nn.Embedding`` plus a trainable low-rank update of its table.

    ``E' = E + (α/r) · (B A)ᵀ``: the row for token ``i`` gets
    ``(α/r) · B A[:, i]``. Parameters: ``weight [n, d]`` (frozen, as in
    ``nn.Embedding``), ``lora_A [r, n]`` (normal), ``lora_B [d, r]`` (zeros),
    the same orientation as ``peft``'s embedding adapter.
    """

    def __init__(self, n: int, d: int, r: int, alpha: float | None = None, *,
                 device=None, dtype=None):
        super().__init__()
        self.num_embeddings = _check_dim("n (number of embeddings)", n)
        self.embedding_dim = _check_dim("d (embedding dim)", d)
        self.r, self.alpha = _check_rank_alpha(r, alpha)
        kw = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(n, d, **kw), requires_grad=False)
        self.lora_A = nn.Parameter(torch.empty(self.r, n, **kw))
        self.lora_B = nn.Parameter(torch.empty(d, self.r, **kw))
        self.merged = False
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Base table N(0, 1) as ``nn.Embedding``; A random, B = 0."""
        nn.init.normal_(self.weight)
        self.reset_adapter()

    @torch.no_grad()
    def reset_adapter(self) -> None:
        nn.init.normal_(self.lora_A)
        nn.init.zeros_(self.lora_B)
        self.merged = False

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, r: int, alpha: float | None = None) -> "LoRAEmbedding":
        """Wrap an existing ``nn.Embedding``: its table is reused (and frozen)."""
        if not isinstance(emb, nn.Embedding):
            raise TypeError(f"from_embedding expects an nn.Embedding, got {type(emb).__name__}")
        if emb.padding_idx is not None or emb.max_norm is not None or emb.sparse:
            raise ValueError("from_embedding supports plain embeddings only "
                             "(no padding_idx, max_norm or sparse)")
        w = emb.weight
        layer = cls(emb.num_embeddings, emb.embedding_dim, r, alpha, device=w.device, dtype=w.dtype)
        layer.weight = emb.weight
        layer.weight.requires_grad_(False)
        return layer

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A).T * self.scaling  # [n, d]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # ids: [...] -> [..., d]
        out = F.embedding(ids, self.weight)
        if self.merged:
            return out
        a_rows = F.embedding(ids, self.lora_A.T)  # [..., r]
        return out + (a_rows @ self.lora_B.T) * self.scaling

    def attend(self, h: torch.Tensor) -> torch.Tensor:
        """``h E'ᵀ``: logits of a head tied to this (adapted) table. h: [..., d] -> [..., n]."""
        logits = h @ self.weight.T
        if self.merged:
            return logits
        return logits + ((h @ self.lora_B) @ self.lora_A) * self.scaling

    def to_embedding(self) -> nn.Embedding:
        """A plain ``nn.Embedding`` with ΔW folded in (shares the weight Parameter)."""
        if not self.merged:
            self.merge()
        emb = nn.Embedding(self.num_embeddings, self.embedding_dim, device="meta",
                           dtype=self.weight.dtype)
        emb.weight = self.weight
        return emb

    def extra_repr(self) -> str:
        return (f"n={self.num_embeddings}, d={self.embedding_dim}, r={self.r}, "
                f"alpha={self.alpha:g}, merged={self.merged}")


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its frozen weight and replace the LoRA layers by
    plain ``nn.Linear`` / ``nn.Embedding`` (in place; the model is returned).

    Outputs are unchanged up to float rounding. The base weight Parameter is
    updated in place and reused, so weights tied to it (e.g. GPT-2's output
    head tied to the token embedding) see the merged values. If ``model`` is
    itself a LoRA layer, the plain replacement is returned.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"merge_lora expects an nn.Module, got {type(model).__name__}")
    if isinstance(model, LoRALinear):
        return model.to_linear()
    if isinstance(model, LoRAEmbedding):
        return model.to_embedding()
    for name, child in list(model.named_children()):
        if isinstance(child, (LoRALinear, LoRAEmbedding)):
            setattr(model, name, merge_lora(child))
        else:
            merge_lora(child)
    return model


def is_lora_key(key: str) -> bool:
    """Whether a state-dict key names an adapter tensor (``...lora_A`` / ``...lora_B``)."""
    return key.rsplit(".", 1)[-1] in ADAPTER_NAMES


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors of ``model``, keyed as in ``model.state_dict()``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"lora_state_dict expects an nn.Module, got {type(model).__name__}")
    return {k: v for k, v in model.state_dict().items() if is_lora_key(k)}
