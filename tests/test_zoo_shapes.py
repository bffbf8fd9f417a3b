"""course_lib.zoo.shapes: tiny configs train deterministically, follow the zoo contract, and sample."""

import pytest
import torch

from course_lib import zoo
from course_lib.checkpoint import DamagedFileError, load_tensors
from course_lib.data.shapes import SHAPE_COLORS, SHAPE_KINDS, SHAPE_POSITIONS, SHAPE_SIZES
from course_lib.zoo import shapes
from course_lib.zoo.shapes import ShapesLDM, load_ldm, load_vae, shapes_tokenizer

VAE = dict(n_images=64, steps=3, batch_size=8, block_out_channels=(8, 16), decoder_steps=3)
LDM = dict(vae=VAE, n_images=64, steps=3, batch_size=8, unet_channels=(16, 16), text_width=16, text_layers=1,
           text_heads=2)


def test_vae_trains_caches_and_reloads(zoo_cache):
    a = load_vae(device="cpu", progress=False, **VAE)
    (cached,) = zoo_cache.glob("shapes-vae-*.safetensors")
    assert a.config.scaling_factor > 0 and len(a.history) == VAE["steps"]
    b = load_vae(device="cpu", progress=False, **VAE)  # from the cache
    for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert b.config.scaling_factor == a.config.scaling_factor and b.history == a.history
    tensors, _ = load_tensors(cached)
    assert all(t.device.type == "cpu" for t in tensors.values())  # weights are cached on the CPU


@pytest.mark.parametrize("channels, side", [((8, 16), 16), ((8, 8, 16), 8)])
def test_the_latent_side_follows_the_autoencoder_config(zoo_cache, channels, side):
    vae = load_vae(device="cpu", progress=False, **{**VAE, "block_out_channels": channels})
    assert vae.config.downsample_factor == 32 // side
    assert vae.encode(torch.zeros(2, 3, 32, 32)).mean.shape == (2, 4, side, side)
    ldm = load_ldm(device="cpu", progress=False, **{**LDM, "vae": {**VAE, "block_out_channels": channels}})
    z = ldm.text_to_image(["a red circle"], n_steps=2, output_type="latent", generator=torch.Generator())
    assert z.shape == (1, 4, side, side)


def test_vae_training_is_deterministic(zoo_cache):
    a = load_vae(device="cpu", progress=False, **VAE)
    b = load_vae(device="cpu", progress=False, retrain=True, **VAE)
    for v, v2 in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(v, v2, rtol=0, atol=0)


def test_the_decoder_stage_trains_the_decoder_only(zoo_cache):
    """Second stage (decoder on noisy latents): the encoder, its latents and the scale stay as they were."""
    plain = load_vae(device="cpu", progress=False, **{**VAE, "decoder_steps": 0})
    tuned = load_vae(device="cpu", progress=False, **VAE)
    p, t = plain.state_dict(), tuned.state_dict()
    encoder = [k for k in p if k.startswith(("encoder.", "quant_conv."))]
    decoder = [k for k in p if k.startswith(("decoder.", "post_quant_conv."))]
    assert encoder and len(encoder) + len(decoder) == len(p)
    assert all(torch.equal(p[k], t[k]) for k in encoder)
    assert any(not torch.equal(p[k], t[k]) for k in decoder)
    assert tuned.config.scaling_factor == plain.config.scaling_factor
    images = torch.rand(16, 3, 32, 32) * 2 - 1
    losses = shapes.train_decoder_on_noisy_latents(plain, images, shapes.ShapesVAEConfig(**{**VAE, "decoder_steps": 2}),
                                                   device="cpu", progress=False)
    assert len(losses) == 2 and all(q.requires_grad for q in plain.parameters())  # the encoder is unfrozen again
    with pytest.raises(ValueError, match="decoder_noise"):
        shapes.ShapesVAEConfig(decoder_noise=-0.1)
    with pytest.raises(TypeError, match="decoder_steps"):
        shapes.ShapesVAEConfig(decoder_steps=1.5)


def test_ldm_samples_and_reloads(zoo_cache):
    ldm = zoo.load("shapes-ldm", device="cpu", progress=False, **LDM)
    assert isinstance(ldm, ShapesLDM) and len(ldm.history) == LDM["steps"] and ldm.train_seconds > 0
    prompts = ["a red circle", "a big blue square on the left"]
    x = ldm.sample(prompts, guidance_scale=5.0, n_steps=3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    again = load_ldm(device="cpu", progress=False, **LDM)  # cached: same weights, same samples
    y = again.sample(prompts, n_steps=3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, y)
    assert len(list(zoo_cache.glob("shapes-ldm-*.safetensors"))) == 1


def test_global_rng_is_the_same_after_a_cold_or_a_warm_load(assert_global_rng_untouched):
    assert_global_rng_untouched(lambda: load_ldm(device="cpu", progress=False, **LDM))


def test_training_is_announced_on_a_cold_cache_only(zoo_cache, capsys):
    load_vae(device="cpu", **VAE)
    out = capsys.readouterr()
    assert "zoo: training shapes-vae" in out.out and str(zoo_cache) in out.out
    load_vae(device="cpu", **VAE)
    assert capsys.readouterr().out == ""


def test_device_is_not_part_of_the_cache_key(zoo_cache, monkeypatch):
    trained = load_ldm(device="cpu", progress=False, **LDM)
    monkeypatch.setattr(shapes, "train_ldm", lambda *a, **k: pytest.fail("must come from the cache"))
    monkeypatch.setattr(shapes, "train_vae", lambda *a, **k: pytest.fail("must come from the cache"))
    on_meta = load_ldm(device="meta", progress=False, **LDM)  # any other device: the same files
    assert on_meta.device.type == "meta"
    if torch.cuda.is_available():  # the real cross-device case
        on_gpu = load_ldm(device="cuda", progress=False, **LDM)
        for a, b in zip(trained.unet.state_dict().values(), on_gpu.unet.state_dict().values()):
            assert torch.equal(a, b.cpu())


def test_a_damaged_cache_file_names_the_file_and_the_remedy(zoo_cache):
    load_ldm(device="cpu", progress=False, **LDM)
    (cached,) = zoo_cache.glob("shapes-ldm-*.safetensors")
    cached.write_bytes(cached.read_bytes()[:-100])
    with pytest.raises(DamagedFileError, match=rf"{cached.name}.*retrain=True"):
        load_ldm(device="cpu", progress=False, **LDM)
    again = load_ldm(device="cpu", progress=False, retrain=True, **LDM)  # the remedy works
    assert len(again.history) == LDM["steps"]


def test_options_are_checked(zoo_cache):
    with pytest.raises(ValueError, match="unknown shapes-vae option.*stepz.*allowed: image_size"):
        load_vae(progress=False, stepz=3)
    with pytest.raises(ValueError, match="unknown shapes-ldm.vae option.*bogus"):
        load_ldm(progress=False, vae=dict(bogus=1))
    with pytest.raises(TypeError, match="shapes-ldm option steps must be of type int"):
        load_ldm(progress=False, steps=2.5)
    with pytest.raises(TypeError, match="ShapesVAEConfig"):
        load_vae(config=3)
    ldm = load_ldm(device="cpu", progress=False, **LDM)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ldm.sample(["a pink circle"], n_steps=2)
    with pytest.raises(ValueError, match="prompt list is empty"):
        ldm.sample([], n_steps=2)


def test_shapes_tokenizer_knows_every_caption_word():
    tok = shapes_tokenizer()
    words = set(tok.vocab)
    for phrase in SHAPE_COLORS + SHAPE_KINDS + SHAPE_SIZES + SHAPE_POSITIONS:
        assert set(phrase.split()) <= words
    ids = tok(["a big red circle on the left"])
    assert ids.shape == (1, 10) and tok.decode(ids[0]) == "a big red circle on the left"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok(["a red star"])


def test_training_captions_say_each_attribute_alone_and_together():
    from course_lib.data import make_shapes

    _, _, labels = make_shapes(3, seed=0, return_labels=True)
    tok = shapes_tokenizer()
    ids = shapes._caption_variants(labels, tok)  # [3, 4, L]
    texts = [[tok.decode(v) for v in row] for row in ids]
    for row, c, k, big, p in zip(texts, labels["color"], labels["kind"], labels["big"], labels["position"]):
        base = f"{SHAPE_COLORS[c]} {SHAPE_KINDS[k]}"
        size, where = SHAPE_SIZES[int(big)], SHAPE_POSITIONS[p]
        assert row == [f"a {base}", f"a {base} {where}", f"a {size} {base}", f"a {size} {base} {where}"]


def _numbered_captions(n: int) -> torch.Tensor:
    """ids_all [n, 4, 2] whose caption (image i, variant v) is the token pair (i, v): each says whose it is."""
    i = torch.arange(n).view(n, 1, 1).expand(n, 4, 1)
    v = torch.arange(4).view(1, 4, 1).expand(n, 4, 1)
    return torch.cat([i, v], dim=-1)


def test_training_captions_drop_and_shuffle_by_noise_level():
    n, b = 500, 40000
    config = shapes.ShapesLDMConfig(p_size=0.5, p_position=0.5, cond_dropout=0.1, low_noise_t=400,
                                    low_noise_dropout=0.2, low_noise_shuffle=0.6)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, n, (b,), generator=g)
    t = torch.randint(0, 1000, (b,), generator=g)
    empty = torch.tensor([-1, -1])
    ids = shapes.training_captions(_numbered_captions(n), idx, t, empty, config, g)  # [B, 2]
    dropped = (ids == empty).all(-1)
    own, other = ~dropped & (ids[:, 0] == idx), ~dropped & (ids[:, 0] != idx)
    low = t < 400
    assert abs(dropped[low].float().mean() - 0.2) < 0.015 and abs(dropped[~low].float().mean() - 0.1) < 0.015
    assert abs(other[low].float().mean() - 0.6) < 0.015  # shuffled (a shuffle onto itself is 1 in 500)
    assert not other[~low].any()  # at high noise a caption is its image's own or empty
    assert abs(own[~low].float().mean() - 0.9) < 0.015
    variant = ids[~dropped, 1]  # 2·says_size + says_position, each half the time
    assert abs((variant >= 2).float().mean() - 0.5) < 0.015 and abs((variant % 2).float().mean() - 0.5) < 0.015


def test_caption_fractions_are_checked():
    with pytest.raises(ValueError, match="low_noise_dropout \\+ low_noise_shuffle must be at most 1"):
        shapes.ShapesLDMConfig(low_noise_dropout=0.5, low_noise_shuffle=0.6)
    with pytest.raises(ValueError, match="cond_dropout"):
        shapes.ShapesLDMConfig(cond_dropout=1.5)


def test_the_ldm_trains_on_posterior_means_unless_told_to_sample(zoo_cache):
    means = load_ldm(device="cpu", progress=False, **LDM)
    again = load_ldm(device="cpu", progress=False, retrain=True, **LDM)
    sampled = load_ldm(device="cpu", progress=False, **LDM, sample_posterior=True)
    a, b, c = (m.unet.state_dict() for m in (means, again, sampled))
    assert all(torch.equal(a[k], b[k]) for k in a)  # deterministic
    assert any(not torch.equal(a[k], c[k]) for k in a)  # posterior noise changes what the UNet sees
