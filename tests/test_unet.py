"""course_lib.unet: equal to diffusers' UNet2DConditionModel (SD v1 and v2 layouts)."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from course_lib.diffusers_io import load_strict
from course_lib.params import count_parameters
from course_lib.unet import (UNetConfig, UNetModel, config_from_diffusers, diffusers_config, from_diffusers,
                             load_unet_folder)
from course_lib.unet_blocks import timestep_embedding
from randomise import randomise

diffusers = pytest.importorskip("diffusers")

SD1_SMALL = UNetConfig(block_out_channels=(32, 64, 64), layers_per_block=2,
                       cross_attention_levels=(True, True, False), cross_attention_dim=24,
                       num_heads=4, norm_num_groups=8)
SD2_SMALL = UNetConfig(block_out_channels=(32, 64, 64), layers_per_block=1,
                       cross_attention_levels=(False, True, True), cross_attention_dim=40,
                       num_heads=None, head_dim=16, use_linear_projection=True, transformer_layers=2,
                       norm_num_groups=8, norm_eps=1e-6, upcast_attention=True)


def reference(cfg, seed=0):
    return randomise(diffusers.UNet2DConditionModel(**diffusers_config(cfg)), seed).eval()


@pytest.mark.parametrize("cfg", [SD1_SMALL, SD2_SMALL], ids=["sd1", "sd2"])
def test_epsilon_equals_diffusers(cfg):
    ref = reference(cfg)
    ours = from_diffusers(ref).eval()
    x = torch.randn(2, 4, 16, 16)
    t = torch.tensor([3, 801])
    cond = torch.randn(2, 5, cfg.cross_attention_dim)
    with torch.no_grad():
        want = ref(x, t, cond).sample
        assert want.abs().mean() > 0.05  # a meaningful output, not ~0
        torch.testing.assert_close(ours(x, t, cond), want, atol=1e-4, rtol=1e-4)
        ours.set_attention_backend("naive")
        torch.testing.assert_close(ours(x, t, cond), want, atol=1e-4, rtol=1e-4)
        # a scalar timestep is broadcast to the batch, as in diffusers
        torch.testing.assert_close(ours(x, 250, cond), ref(x, 250, cond).sample, atol=1e-4, rtol=1e-4)


def test_conversion_does_not_share_storage():
    ref = reference(SD1_SMALL)
    ours = from_diffusers(ref)
    with torch.no_grad():
        ref.conv_in.weight.zero_()
    assert ours.conv_in.weight.abs().sum() > 0


@pytest.mark.parametrize("flip,shift", [(True, 0), (False, 1)])
def test_time_embedding_equals_diffusers(flip, shift):
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.tensor([0.0, 1.0, 37.5, 999.0])
    for dim in (320, 33):
        torch.testing.assert_close(timestep_embedding(t, dim, flip, shift),
                                   get_timestep_embedding(t, dim, flip, shift), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("cfg", [UNetConfig.sd15(), UNetConfig.sd2()], ids=["sd15", "sd2"])
def test_full_size_matches_diffusers_key_for_key(cfg):
    with torch.device("meta"):
        ref = diffusers.UNet2DConditionModel(**diffusers_config(cfg))
        ours = from_diffusers(ref)  # strict: every key and shape must match
    assert count_parameters(ours).total == count_parameters(ref).total
    assert len(ours.state_dict()) == len(ref.state_dict())


def test_sd15_parameter_count():
    with torch.device("meta"):
        model = UNetModel(UNetConfig.sd15())
    assert count_parameters(model).total == 859_520_964


def test_sd15_config_from_diffusers_defaults():
    # SD v1.5's unet/config.json fields that differ from UNet2DConditionModel's defaults
    cfg = config_from_diffusers({"cross_attention_dim": 768, "attention_head_dim": 8, "sample_size": 64})
    assert cfg == UNetConfig.sd15()
    sd2 = config_from_diffusers({"cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20],
                                 "use_linear_projection": True, "upcast_attention": True})
    assert sd2.heads_per_level() == UNetConfig.sd2().heads_per_level()


def test_load_from_diffusers_folder(tmp_path):
    ref = reference(SD2_SMALL, seed=1)
    ref.save_pretrained(tmp_path)
    ours = load_unet_folder(tmp_path)
    assert UNetModel.from_folder(tmp_path).config == ours.config
    x, cond = torch.randn(1, 4, 8, 8), torch.randn(1, 3, 40)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, 10, cond), ref(x, 10, cond).sample, atol=1e-4, rtol=1e-4)


def test_strict_loading_names_the_bad_key(tmp_path):
    ref = reference(SD1_SMALL)
    ref.save_pretrained(tmp_path)
    weights = tmp_path / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    key = "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight"
    missing = {k: v for k, v in state.items() if k != key}
    save_file(missing, weights)
    with pytest.raises(KeyError, match="attn2.k_proj.weight"):
        load_unet_folder(tmp_path)
    bad = dict(state)
    bad[key] = torch.zeros(3, 3)
    save_file(bad, weights)
    with pytest.raises(ValueError, match=r"attn2\.k_proj\.weight: checkpoint \(3, 3\) vs model \(32, 24\)"):
        load_unet_folder(tmp_path)
    extra = dict(state, **{"surprise.weight": torch.zeros(1)})
    save_file(extra, weights)
    with pytest.raises(KeyError, match="surprise.weight"):
        load_unet_folder(tmp_path)
    model = UNetModel(SD1_SMALL)
    with pytest.raises(KeyError, match="conv_in.bias"):
        load_strict(model, {k: v for k, v in model.state_dict().items() if k != "conv_in.bias"})


def test_unsupported_diffusers_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="class_embed_type"):
        config_from_diffusers({"class_embed_type": "timestep"})
    with pytest.raises(ValueError, match="must mirror"):
        config_from_diffusers({"up_block_types": ["CrossAttnUpBlock2D"] * 4})
    (tmp_path / "config.json").write_text(json.dumps({"cross_attention_dim": 768}))
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_unet_folder(tmp_path)


def test_bad_inputs():
    model = UNetModel(SD1_SMALL)
    cond = torch.randn(1, 2, 24)
    with pytest.raises(ValueError, match=r"10x12 can.t be halved 2 times: H and W must be multiples of 4"):
        model(torch.randn(1, 4, 10, 12), 1, cond)
    with pytest.raises(ValueError, match=r"cond width 16 != cross_attention_dim=24"):
        model(torch.randn(1, 4, 8, 8), 1, torch.randn(1, 2, 16))
    with pytest.raises(ValueError, match=r"cond batch 3 != x batch 1"):
        model(torch.randn(1, 4, 8, 8), 1, torch.randn(3, 2, 24))
    with pytest.raises(ValueError, match=r"x must be \[B, 4, H, W\]"):
        model(torch.randn(1, 3, 8, 8), 1, cond)
    with pytest.raises(ValueError, match="timesteps must be a scalar"):
        model(torch.randn(1, 4, 8, 8), torch.ones(2, 2), cond)
    with pytest.raises(ValueError, match="'naive' or 'sdpa'"):
        model.set_attention_backend("flash")
    with pytest.raises(ValueError, match="exactly one of num_heads"):
        UNetConfig(num_heads=8, head_dim=64)
    with pytest.raises(ValueError, match="not divisible by norm_num_groups"):
        UNetConfig.small(block_out_channels=(30, 60))
    with pytest.raises(ValueError, match="one flag per level"):
        UNetConfig.small(cross_attention_levels=(True,))
    with pytest.raises(TypeError, match="UNetConfig"):
        UNetModel({"in_channels": 4})


def test_cross_attention_maps():
    cfg = UNetConfig.small(cross_attention_dim=8)
    model = randomise(UNetModel(cfg)).eval()
    x, cond = torch.randn(2, 4, 8, 8), torch.randn(2, 3, 8)
    with pytest.raises(RuntimeError, match="record_cross_attention"):
        model.cross_attention_maps()
    with torch.no_grad():
        plain = model(x, 5, cond)
        model.record_cross_attention(True)
        recorded = model(x, 5, cond)
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-5)
    maps = model.cross_attention_maps()
    # 2 levels x 1 transformer (down), mid, 2 levels x 2 transformers (up)
    assert len(maps) == 2 + 1 + 4
    assert maps["down_blocks.0.attentions.0.transformer_blocks.0.attn2"].shape == (2, 4, 64, 3)
    assert maps["mid_block.attentions.0.transformer_blocks.0.attn2"].shape == (2, 4, 16, 3)
    for w in maps.values():
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
    tokens = model.cross_attention_token_maps(size=16)
    assert tokens.shape == (2, 3, 16, 16)
    heads = model.cross_attention_head_maps()  # at the latent size (8×8): the first level needs no resizing
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
    assert list(heads) == list(maps) and heads[name].shape == (2, 4, 3, 8, 8)
    # head 2's map of token 1 at pixel (row 3, column 5) is that pixel's weight (query 3·8 + 5) on token 1
    assert heads[name][1, 2, 1, 3, 5] == maps[name][1, 2, 3 * 8 + 5, 1]
    mid = F.interpolate(maps["mid_block.attentions.0.transformer_blocks.0.attn2"].mean(1).transpose(1, 2)
                        .reshape(2, 3, 4, 4), size=16, mode="bilinear", align_corners=False)  # [B, L, 16, 16]
    torch.testing.assert_close(model.cross_attention_head_maps(size=16)
                               ["mid_block.attentions.0.transformer_blocks.0.attn2"].mean(1), mid)
    model.record_cross_attention(False)
    with pytest.raises(RuntimeError):
        model.cross_attention_maps()


def test_small_unet_trains_one_step():
    model = UNetModel(UNetConfig.small(in_channels=1, out_channels=1, cross_attention_dim=16))
    x, cond = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 16)
    loss = (model(x, torch.randint(0, 1000, (4,)), cond) - x).pow(2).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


# ------------------------------------------------------------ half precision
HALF = [torch.bfloat16, torch.float16]


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def half_angle_time_embedding(dtype):
    """A deliberately wrong time embedding whose angles t·ω are computed in ``dtype`` (the negative control)."""

    def embed(t, dim, flip_sin_to_cos=True, freq_shift=0.0, max_period=10000.0):
        half = dim // 2
        freqs = torch.exp(-torch.log(torch.tensor(max_period)) * torch.arange(half) / (half - freq_shift))
        angles = t.to(dtype)[:, None] * freqs.to(dtype)[None]
        emb = torch.cat([angles.cos(), angles.sin()] if flip_sin_to_cos else [angles.sin(), angles.cos()], -1)
        return emb.float()

    return embed


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
@pytest.mark.parametrize("cfg", [SD1_SMALL, SD2_SMALL], ids=["sd1", "sd2"])
def test_half_precision_is_as_close_to_fp32_as_diffusers(cfg, dtype, monkeypatch):
    """Same random weights: our bf16/fp16 ε is at least as close to the fp32 ε as diffusers' in that dtype.

    Tolerance factor 1.25: the two models round in a different order (1×1 conv vs linear,
    attention shapes), and over seeds the ratio of their half-precision errors measured
    0.89–1.09. A time embedding whose angles are computed in half precision (diffusers
    keeps them in fp32) is 1.6–7× worse, and is caught below.
    """
    ref = reference(cfg, seed=1)
    ours = from_diffusers(ref).eval()
    g = torch.Generator().manual_seed(2)
    x, cond = torch.randn(4, 4, 16, 16, generator=g), torch.randn(4, 7, cfg.cross_attention_dim, generator=g)
    t = torch.tensor([999, 981, 500, 3])
    with torch.no_grad():
        want = ref(x, t, cond).sample
        ref_half, ours_half = ref.to(dtype), ours.to(dtype)
        err_ref = rel_err(ref_half(x.to(dtype), t, cond.to(dtype)).sample, want)
        err_ours = rel_err(ours_half(x.to(dtype), t, cond.to(dtype)), want)
        assert ours_half(x.to(dtype), t, cond.to(dtype)).dtype == dtype
        assert 0 < err_ours <= 1.25 * err_ref, (err_ours, err_ref)
        monkeypatch.setattr("course_lib.unet.timestep_embedding", half_angle_time_embedding(dtype))
        assert rel_err(ours_half(x.to(dtype), t, cond.to(dtype)), want) > 1.25 * err_ref  # the test can fail


def test_upcast_attention_reaches_every_attention_layer():
    from course_lib.attention import MultiHeadAttention

    for cfg, upcast in ((SD1_SMALL, False), (SD2_SMALL, True)):
        layers = [m for m in UNetModel(cfg).modules() if isinstance(m, MultiHeadAttention)]
        assert layers and all(m.upcast is upcast for m in layers)


def test_upcast_attention_computes_attention_in_float32(monkeypatch):
    """``upcast_attention`` (SD 2.x) changes the forward: scores, softmax and the weighted sum
    run in float32 in a half-precision UNet.

    Structurally: the fused kernel receives float32 queries, keys and values with the upcast
    and half-precision ones without. Numerically: in bfloat16 (8-bit mantissa), with sharp
    attention (queries and keys of the mid block x8), the upcast output is closer to the
    float32 model's than the output of the same half model without it.
    (The written-out path, used for attention maps, computes in float32 anyway.)
    """
    import torch.nn.functional as F

    model = randomise(UNetModel(SD2_SMALL), seed=0).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("mid_block") and name.endswith(("attn1.q_proj.weight", "attn1.k_proj.weight")):
                p.mul_(8)
    g = torch.Generator().manual_seed(0)
    x, cond, t = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 7, 40, generator=g), torch.tensor([999, 10])
    seen = []
    real_sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        seen.append(q.dtype)
        return real_sdpa(q, k, v, *args, **kwargs)

    def run(upcast: bool):
        for m in half.modules():
            if hasattr(m, "upcast"):
                m.upcast = upcast
        seen.clear()
        out = half(x.bfloat16(), t, cond.bfloat16())
        return out, set(seen)

    with torch.no_grad():
        want = model(x, t, cond)
        half = model.to(torch.bfloat16)
        monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
        with_upcast, dtypes_up = run(True)
        without, dtypes_plain = run(False)
    assert dtypes_up == {torch.float32} and dtypes_plain == {torch.bfloat16}
    assert rel_err(with_upcast, want) < rel_err(without, want)


def test_build_and_load_keeps_the_dtype_without_a_device():
    from course_lib.diffusers_io import build_and_load

    state = UNetModel(SD1_SMALL).state_dict()
    model = build_and_load(UNetModel, SD1_SMALL, state, [], dtype=torch.float16)
    assert all(p.dtype == torch.float16 and p.device.type == "cpu" for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in build_and_load(UNetModel, SD1_SMALL, state, []).parameters())
    half = from_diffusers(reference(SD1_SMALL).to(torch.bfloat16))  # the loaders pass the model's dtype on
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
