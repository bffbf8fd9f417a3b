"""course_lib.transformer against torch.nn.TransformerEncoderLayer and the paper's formulas."""

import math

import pytest
import torch
from torch import nn

from course_lib.attention import causal_mask
from course_lib.params import count_parameters
from course_lib.transformer import (FeedForward, LearnedPositionalEncoding, SinusoidalPositionalEncoding,
                                    TinyDecoder, TransformerBlock, quick_gelu, sinusoidal_encoding)


def _torch_layer_from(block: TransformerBlock, d: int, h: int, d_hidden: int) -> nn.TransformerEncoderLayer:
    ref = nn.TransformerEncoderLayer(d, h, d_hidden, dropout=0.0, activation="gelu",
                                     batch_first=True, norm_first=True).eval()
    a = block.attn
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
        ref.self_attn.in_proj_bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
        ref.self_attn.out_proj.weight.copy_(a.out_proj.weight)
        ref.self_attn.out_proj.bias.copy_(a.out_proj.bias)
        ref.linear1.weight.copy_(block.mlp.fc1.weight), ref.linear1.bias.copy_(block.mlp.fc1.bias)
        ref.linear2.weight.copy_(block.mlp.fc2.weight), ref.linear2.bias.copy_(block.mlp.fc2.bias)
        for ours, theirs in ((block.ln_1, ref.norm1), (block.ln_2, ref.norm2)):
            theirs.weight.copy_(ours.weight), theirs.bias.copy_(ours.bias)
    return ref


@pytest.mark.parametrize("causal", [False, True])
def test_block_matches_torch_encoder_layer(causal):
    d, h, d_hidden = 32, 4, 48
    block = TransformerBlock(d, h, d_hidden, causal=causal).eval()
    with torch.no_grad():  # every parameter random, LayerNorm gains and biases too
        for p in block.parameters():
            p.normal_(0, 0.3)
    ref = _torch_layer_from(block, d, h, d_hidden)
    x = torch.randn(2, 6, d)
    kpm = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    ours = block(x, key_padding_mask=kpm)
    theirs = ref(x, src_mask=~causal_mask(6) if causal else None, src_key_padding_mask=kpm)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_feed_forward_is_gelu_mlp():
    ff = FeedForward(8, 20)
    assert ff.fc1.weight.shape == (20, 8) and ff.fc2.weight.shape == (8, 20)
    assert FeedForward(8).fc1.out_features == 32  # 4 × d_model by default
    x = torch.randn(3, 4, 8)
    expected = ff.fc2(torch.nn.functional.gelu(ff.fc1(x)))
    torch.testing.assert_close(ff(x), expected)


@pytest.mark.parametrize("activation,formula", [
    ("gelu", lambda u: 0.5 * u * (1 + torch.erf(u / math.sqrt(2)))),
    ("gelu_tanh", lambda u: 0.5 * u * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))),
    ("quick_gelu", lambda u: u * torch.sigmoid(1.702 * u)),
])
def test_feed_forward_activations_follow_their_formulas(activation, formula):
    ff = FeedForward(6, 10, activation=activation)
    x = 3 * torch.randn(2, 5, 6)
    torch.testing.assert_close(ff(x), ff.fc2(formula(ff.fc1(x))))
    with pytest.raises(ValueError, match="activation must be one of 'gelu', 'gelu_tanh', 'quick_gelu'"):
        FeedForward(6, activation="relu")


def test_quick_gelu_rounds_once_in_half_precision():
    """In float16/bfloat16 the result is the exact value rounded once: closer to the truth
    than the formula evaluated step by step in half precision (three roundings)."""
    x = torch.linspace(-6, 6, 1001)
    for dtype in (torch.float16, torch.bfloat16):
        xh = x.to(dtype)
        truth = xh.double() * torch.sigmoid(1.702 * xh.double())
        got = quick_gelu(xh)
        assert got.dtype == dtype
        assert torch.equal(got, truth.to(dtype))  # correctly rounded for every input here
        stepwise = xh * torch.sigmoid(1.702 * xh)
        assert (got.double() - truth).abs().mean() < (stepwise.double() - truth).abs().mean()


def test_fused_qkv_block_equals_separate_projections():
    """A block with one q/k/v projection (GPT-2's layout) computes what three projections compute."""
    sep = TransformerBlock(16, 4, causal=True, activation="gelu_tanh").eval()
    with torch.no_grad():
        for p in sep.parameters():
            p.normal_(0, 0.3)
    fused = TransformerBlock(16, 4, causal=True, activation="gelu_tanh", fused_qkv=True).eval()
    state = {k: v for k, v in sep.state_dict().items() if not k.startswith(("attn.q_", "attn.k_", "attn.v_"))}
    a = sep.attn
    state["attn.qkv_proj.weight"] = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])
    state["attn.qkv_proj.bias"] = torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias])
    fused.load_state_dict(state, strict=True)
    x = torch.randn(2, 7, 16)
    torch.testing.assert_close(fused(x), sep(x), atol=1e-6, rtol=1e-5)


def test_block_with_a_kv_cache_equals_the_full_sequence():
    from course_lib.kv_cache import KVCache

    block = TransformerBlock(16, 2, causal=True, fused_qkv=True).eval()
    x = torch.randn(2, 9, 16)
    cache = KVCache(1, 2, 2, 16, 8)
    with torch.no_grad():
        full = block(x)
        parts = []
        for chunk in (x[:, :4], x[:, 4:5], x[:, 5:]):  # a prompt, one token, several tokens
            parts.append(block(chunk, cache=cache, layer=0))
            cache.advance(chunk.shape[1])
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_sinusoidal_table_follows_the_paper():
    n, d = 12, 10
    pe = sinusoidal_encoding(n, d)
    for pos in range(n):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)
    with pytest.raises(ValueError, match="d_model must be even"):
        sinusoidal_encoding(4, 7)


@pytest.mark.parametrize("cls", [SinusoidalPositionalEncoding, LearnedPositionalEncoding])
def test_positional_encodings_add_the_table(cls):
    enc = cls(16, max_len=20)
    x = torch.randn(2, 7, 16)
    torch.testing.assert_close(enc(x), x + enc.table[:7])
    with pytest.raises(ValueError, match="exceeds max_len=20"):
        enc(torch.randn(1, 21, 16))
    with pytest.raises(ValueError, match=r"x must be \[B, T, 16\]"):
        enc(torch.randn(1, 5, 8))


def test_learned_encoding_is_trained_sinusoidal_is_not():
    assert sum(p.numel() for p in SinusoidalPositionalEncoding(16, 20).parameters()) == 0
    assert sum(p.numel() for p in LearnedPositionalEncoding(16, 20).parameters()) == 20 * 16


def _tiny(**kw):
    return TinyDecoder(vocab_size=13, d_model=32, n_heads=4, n_layers=2, max_len=16, **kw).eval()


def test_tiny_decoder_shapes_and_parameter_count():
    model = _tiny()
    ids = torch.randint(0, 13, (3, 10))
    assert model(ids).shape == (3, 10, 13)
    d, v, t, f = 32, 13, 16, 128
    block = 2 * 2 * d + (4 * d * d + 4 * d) + (d * f + f + f * d + d)  # 2 LNs, attention, MLP
    assert count_parameters(model).total == v * d + t * d + 2 * block + 2 * d + d * v


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_tiny_decoder_is_causal(positional):
    model = _tiny(positional=positional)
    ids = torch.randint(0, 13, (2, 9))
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 13
    torch.testing.assert_close(model(ids)[:, :6], model(changed)[:, :6])
    assert not torch.allclose(model(ids)[:, 6:], model(changed)[:, 6:])


def test_tiny_decoder_attention_maps():
    model = _tiny()
    ids = torch.randint(0, 13, (2, 8))
    logits, maps = model(ids, return_attention=True)
    torch.testing.assert_close(logits, model(ids))  # recording does not change the result
    assert len(maps) == 2 and all(m.shape == (2, 4, 8, 8) for m in maps)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, 4, 8))
    assert (maps[1].triu(1) == 0).all()  # causal: nothing above the diagonal
    assert len(model.attention_maps(ids)) == 2
    assert all(not b.attn.record_weights for b in model.blocks)


def test_tiny_decoder_bad_input():
    model = _tiny()
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 13\)"):
        model(torch.tensor([[1, 13]]))
    with pytest.raises(ValueError, match="ids must be an integer tensor"):
        model(torch.randn(1, 4))
    with pytest.raises(ValueError, match="exceeds max_len=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="positional must be one of"):
        TinyDecoder(10, positional="rotary")
