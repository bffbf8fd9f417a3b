"""course_lib.attention against PyTorch's own attention, and its error messages."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.attention import MultiHeadAttention, causal_mask, padding_mask, scaled_dot_product_attention


def _copy_into_torch_mha(mha: MultiHeadAttention) -> nn.MultiheadAttention:
    """A torch.nn.MultiheadAttention holding the same weights as ``mha``."""
    ref = nn.MultiheadAttention(mha.d_model, mha.n_heads, batch_first=True, bias=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([mha.q_proj.weight, mha.k_proj.weight, mha.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([mha.q_proj.bias, mha.k_proj.bias, mha.v_proj.bias]))
        ref.out_proj.weight.copy_(mha.out_proj.weight)
        ref.out_proj.bias.copy_(mha.out_proj.bias)
    return ref.eval()


def _randomise(module: nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)


@pytest.mark.parametrize("use_sdpa", [False, True])
@pytest.mark.parametrize("causal,padding", [(False, False), (True, False), (False, True), (True, True)])
def test_matches_torch_multihead_attention(use_sdpa, causal, padding):
    b, t, d, h = 3, 7, 32, 4
    mha = MultiHeadAttention(d, h, use_sdpa=use_sdpa)
    _randomise(mha)  # biases too
    ref = _copy_into_torch_mha(mha)
    x = torch.randn(b, t, d)
    kpm = padding_mask([7, 4, 5], t) if padding else None  # True = padding
    ours = mha(x, causal=causal, key_padding_mask=kpm)
    # torch's attn_mask: True = NOT allowed to attend (the opposite of ours)
    torch_mask = ~causal_mask(t) if causal else None
    theirs, _ = ref(x, x, x, attn_mask=torch_mask, key_padding_mask=kpm, need_weights=False)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_weights_match_torch_average_weights():
    mha = MultiHeadAttention(16, 2, use_sdpa=False)
    _randomise(mha)
    ref = _copy_into_torch_mha(mha)
    x = torch.randn(2, 5, 16)
    mha.record_weights = True
    mha(x, causal=True)
    _, theirs = ref(x, x, x, attn_mask=~causal_mask(5), need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(mha.last_weights, theirs, atol=1e-5, rtol=1e-5)


def test_cross_attention_matches_torch_with_kdim():
    d, kv, h = 24, 10, 3
    mha = MultiHeadAttention(d, h, kv_dim=kv)
    _randomise(mha)
    ref = nn.MultiheadAttention(d, h, kdim=kv, vdim=kv, batch_first=True).eval()
    with torch.no_grad():
        ref.q_proj_weight.copy_(mha.q_proj.weight)
        ref.k_proj_weight.copy_(mha.k_proj.weight)
        ref.v_proj_weight.copy_(mha.v_proj.weight)
        ref.in_proj_bias.copy_(torch.cat([mha.q_proj.bias, mha.k_proj.bias, mha.v_proj.bias]))
        ref.out_proj.weight.copy_(mha.out_proj.weight)
        ref.out_proj.bias.copy_(mha.out_proj.bias)
    x, ctx = torch.randn(2, 5, d), torch.randn(2, 9, kv)
    out = mha(x, context=ctx)
    assert out.shape == (2, 5, d)
    theirs, _ = ref(x, ctx, ctx, need_weights=False)
    torch.testing.assert_close(out, theirs, atol=1e-5, rtol=1e-5)
    mha.record_weights = True
    mha(x, context=ctx)
    assert mha.last_weights.shape == (2, h, 5, 9)


def test_written_out_equals_formula_and_torch_sdpa():
    q, k, v = torch.randn(2, 3, 6, 8), torch.randn(2, 3, 9, 8), torch.randn(2, 3, 9, 5)
    out, w = scaled_dot_product_attention(q, k, v)
    by_hand = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), -1) @ v
    torch.testing.assert_close(out, by_hand)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 6))
    mask = torch.rand(2, 1, 6, 9) > 0.3
    mask[..., 0] = True  # keep at least one key per row
    out_m, _ = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(out_m, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kwargs", [{}, {"causal": True}, {"padding": True}, {"causal": True, "padding": True}])
def test_sdpa_path_equals_written_out_path(kwargs):
    mha = MultiHeadAttention(32, 4, use_sdpa=True)
    _randomise(mha)
    x = torch.randn(2, 6, 32)
    kpm = padding_mask([6, 3], 6) if kwargs.get("padding") else None
    fast = mha(x, causal=kwargs.get("causal", False), key_padding_mask=kpm)
    mha.use_sdpa = False
    slow = mha(x, causal=kwargs.get("causal", False), key_padding_mask=kpm)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_fully_masked_rows_are_zero_not_nan():
    q = k = v = torch.randn(1, 1, 3, 4)
    mask = torch.tensor([[True, False, False], [False, False, False], [True, True, True]])
    out, w = scaled_dot_product_attention(q, k, v, mask)
    assert not torch.isnan(out).any()
    assert (w[0, 0, 1] == 0).all() and (out[0, 0, 1] == 0).all()
    mha = MultiHeadAttention(8, 2, qkv_bias=False, out_bias=False)
    x = torch.randn(1, 3, 8)
    fast = mha(x, attn_mask=mask)
    mha.use_sdpa = False
    torch.testing.assert_close(fast, mha(x, attn_mask=mask))


def test_causal_mask_shapes():
    assert torch.equal(causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))
    # two new queries after three cached keys: each sees the past and itself
    assert torch.equal(causal_mask(2, 5), torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool))


def test_causal_attention_ignores_the_future():
    mha = MultiHeadAttention(16, 2)
    x = torch.randn(1, 6, 16)
    y = x.clone()
    y[:, 4:] = torch.randn(1, 2, 16)  # change the future only
    torch.testing.assert_close(mha(x, causal=True)[:, :4], mha(y, causal=True)[:, :4])


def test_padding_mask():
    assert torch.equal(padding_mask([3, 1], 4), torch.tensor([[0, 0, 0, 1], [0, 1, 1, 1]], dtype=torch.bool))
    with pytest.raises(ValueError, match="every length must be in"):
        padding_mask([5], 4)
    with pytest.raises(TypeError, match="lengths must be a 1-D sequence of ints"):
        padding_mask([1.5, 2.0], 4)


def test_d_model_not_divisible_by_heads_is_a_clear_error():
    with pytest.raises(ValueError, match=r"d_model=30 is not divisible by n_heads=4"):
        MultiHeadAttention(30, 4)
    with pytest.raises(ValueError, match="n_heads must be a positive int"):
        MultiHeadAttention(32, 0)


def test_masks_of_the_wrong_shape_are_clear_errors():
    mha = MultiHeadAttention(16, 2)
    x = torch.randn(2, 5, 16)
    with pytest.raises(ValueError, match=r"key_padding_mask must be \[B, T_k\] = \[2, 5\], got \(2, 4\)"):
        mha(x, key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"attn_mask must end in \[T_q, T_k\] = \[5, 5\]"):
        mha(x, attn_mask=torch.ones(5, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="does not broadcast"):
        mha(x, attn_mask=torch.ones(3, 5, 5, dtype=torch.bool))  # batch of 3 masks for B=2
    with pytest.raises(TypeError, match="bool tensor"):
        mha(x, attn_mask=torch.ones(5, 5))
    with pytest.raises(TypeError, match="bool tensor"):
        mha(x, key_padding_mask=torch.zeros(2, 5))
    q = torch.randn(1, 1, 3, 4)
    with pytest.raises(ValueError, match="does not broadcast"):
        scaled_dot_product_attention(q, q, q, torch.ones(4, 4, dtype=torch.bool))


def test_bad_shapes_are_clear_errors():
    mha = MultiHeadAttention(16, 2, kv_dim=8)
    with pytest.raises(ValueError, match=r"x must be \[B, T, 16\]"):
        mha(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match=r"context must be \[B=2, T_k, kv_dim=8\]"):
        mha(torch.randn(2, 5, 16), context=torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match="same last dim"):
        scaled_dot_product_attention(torch.randn(1, 2, 3), torch.randn(1, 2, 4), torch.randn(1, 2, 4))


@pytest.mark.parametrize("causal", [False, True])
def test_fused_qkv_matches_torch_multihead_attention(causal):
    """One q/k/v projection (GPT-2's layout) is torch's in_proj: rows [q | k | v]."""
    mha = MultiHeadAttention(24, 3, fused_qkv=True)
    _randomise(mha)
    assert not hasattr(mha, "q_proj") and mha.qkv_proj.weight.shape == (72, 24)
    ref = nn.MultiheadAttention(24, 3, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(mha.qkv_proj.weight)
        ref.in_proj_bias.copy_(mha.qkv_proj.bias)
        ref.out_proj.weight.copy_(mha.out_proj.weight)
        ref.out_proj.bias.copy_(mha.out_proj.bias)
    x = torch.randn(2, 6, 24)
    theirs, _ = ref(x, x, x, attn_mask=~causal_mask(6) if causal else None, need_weights=False)
    torch.testing.assert_close(mha(x, causal=causal), theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_kv_cache_gives_the_same_outputs_as_the_full_sequence(use_sdpa):
    from course_lib.kv_cache import KVCache

    mha = MultiHeadAttention(16, 2, fused_qkv=True, use_sdpa=use_sdpa)
    _randomise(mha)
    x = torch.randn(2, 10, 16)
    full = mha(x, causal=True)
    cache = KVCache(n_layers=2, batch_size=2, n_heads=2, max_len=12, head_dim=8)
    outs = []
    for chunk in (x[:, :5], x[:, 5:6], x[:, 6:7], x[:, 7:]):  # prompt, single tokens, a few at once
        outs.append(mha(chunk, causal=True, cache=cache, layer=1))
        cache.advance(chunk.shape[1])
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 10 and cache.k[0].abs().sum() == 0  # only layer 1 was written


def test_fused_and_cached_attention_refuse_cross_attention():
    from course_lib.kv_cache import KVCache

    with pytest.raises(ValueError, match="fused_qkv=True is for self-attention"):
        MultiHeadAttention(16, 2, kv_dim=8, fused_qkv=True)
    x = torch.randn(1, 3, 16)
    with pytest.raises(ValueError, match="cannot be combined with fused_qkv=True"):
        MultiHeadAttention(16, 2, fused_qkv=True)(x, context=x)
    with pytest.raises(ValueError, match="cannot be combined with a KV cache"):
        MultiHeadAttention(16, 2)(x, context=x, cache=KVCache(1, 1, 2, 8, 8))
