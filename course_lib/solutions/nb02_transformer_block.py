"""Solutions to notebook 02's exercises (the transformer block)."""

import math

import torch


def my_layer_norm(x, weight, bias, eps=1e-5):
    """LayerNorm over the last dim with the biased variance (Ba et al. 2016)."""
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * weight + bias


def my_gelu(x):
    """Exact GELU: x Φ(x) = ½ x (1 + erf(x / √2)) (Hendrycks & Gimpel 2016)."""
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def my_gelu_tanh(x):
    """GPT-2's tanh approximation of GELU."""
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def my_post_norm_block(x, block):
    """Post-norm (Vaswani et al. 2017): add the sub-layer's output first, then normalise."""
    x = block.ln_1(x + block.attn(x, causal=block.causal))  # [B, T, d_model]
    return block.ln_2(x + block.mlp(x))  # [B, T, d_model]
