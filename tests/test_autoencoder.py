"""course_lib.autoencoder (SD's AutoencoderKL, equal to diffusers) and course_lib.vae_small."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from course_lib.autoencoder import (Autoencoder, AutoencoderConfig, DiagonalGaussian, diffusers_config,
                                    from_diffusers, load_autoencoder_folder)
from course_lib.vae_small import ConvAutoencoder, ConvVAE, kl_to_standard_normal, train_autoencoder, vae_loss
from randomise import randomise

diffusers = pytest.importorskip("diffusers")

SMALL = AutoencoderConfig(block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8)


def reference(cfg=SMALL, seed=0):
    return randomise(diffusers.AutoencoderKL(**diffusers_config(cfg)), seed).eval()


def test_encoder_and_decoder_equal_diffusers():
    ref = reference()
    ours = from_diffusers(ref).eval()
    x = torch.randn(2, 3, 32, 32)
    z = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        want = ref.encode(x).latent_dist
        got = ours.encode(x)
        assert want.mean.abs().mean() > 0.05
        torch.testing.assert_close(got.mean, want.mean, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got.std, want.std, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got.kl(), want.kl(), atol=1e-3, rtol=1e-4)
        g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        torch.testing.assert_close(got.sample(g1), want.sample(g2), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ours.decode(z), ref.decode(z).sample, atol=1e-4, rtol=1e-4)
        ours.encoder.mid_block.attentions[0].use_sdpa = False  # the written-out attention agrees too
        torch.testing.assert_close(ours.encode(x).mean, want.mean, atol=1e-4, rtol=1e-4)


def test_sd15_size_matches_diffusers_key_for_key():
    with torch.device("meta"):
        ref = diffusers.AutoencoderKL(**diffusers_config(AutoencoderConfig.sd15()))
        ours = from_diffusers(ref)  # strict: every key and shape
        plain = Autoencoder(AutoencoderConfig.sd15())
    n = sum(p.numel() for p in ours.parameters())
    assert n == sum(p.numel() for p in ref.parameters())
    assert sum(p.numel() for p in plain.parameters()) == 83_653_863
    assert AutoencoderConfig.sd15().downsample_factor == 8


def test_latent_scaling_in_one_place():
    model = randomise(Autoencoder(AutoencoderConfig.small())).eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        mean = model.encode(x).mean
        torch.testing.assert_close(model.encode_latents(x, sample=False), mean * 0.18215)
        lat = torch.randn(1, 4, 4, 4)
        torch.testing.assert_close(model.decode_latents(lat), model.decode(lat / 0.18215))
    assert model.scaling_factor == 0.18215


def test_load_from_diffusers_folder(tmp_path):
    ref = reference(seed=2)
    ref.save_pretrained(tmp_path)
    ours = load_autoencoder_folder(tmp_path)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x).mean, ref.encode(x).latent_dist.mean, atol=1e-4, rtol=1e-4)
    assert Autoencoder.from_folder(tmp_path).config == ours.config


def test_strict_loading_names_the_bad_key(tmp_path):
    reference().save_pretrained(tmp_path)
    weights = tmp_path / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    key = "decoder.mid_block.attentions.0.to_v.bias"
    save_file({k: v for k, v in state.items() if k != key}, weights)
    with pytest.raises(KeyError, match=r"decoder\.mid_block\.attentions\.0\.v_proj\.bias"):
        load_autoencoder_folder(tmp_path)
    save_file(dict(state, **{key: torch.zeros(5)}), weights)
    with pytest.raises(ValueError, match=r"v_proj\.bias: checkpoint \(5,\) vs model \(64,\)"):
        load_autoencoder_folder(tmp_path)


def test_diagonal_gaussian():
    moments = torch.randn(2, 8, 3, 3)
    moments[:, 4:] = moments[:, 4:].clamp(-3, 3)
    moments[0, 4, 0, 0], moments[0, 5, 0, 0] = -100.0, 100.0
    d = DiagonalGaussian(moments)
    assert d.logvar[0, 0, 0, 0] == -30.0 and d.logvar[0, 1, 0, 0] == 20.0  # clamped as in the original
    q = torch.distributions.Normal(d.mean, d.std)
    p = torch.distributions.Normal(torch.zeros_like(d.mean), torch.ones_like(d.std))
    torch.testing.assert_close(d.kl(), torch.distributions.kl_divergence(q, p).sum((1, 2, 3)), rtol=1e-4, atol=1e-3)
    a = d.sample(torch.Generator().manual_seed(0))
    b = d.sample(torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == d.mean.shape
    assert torch.equal(d.mode(), d.mean)


def _rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _group_norm_in_half(self, x):
    """A deliberately wrong GroupNorm: statistics in the input's (half) precision (negative control)."""
    g = x.view(x.shape[0], self.num_groups, -1)
    mean = g.mean(-1, keepdim=True)
    var = ((g - mean) ** 2).mean(-1, keepdim=True)
    y = ((g - mean) / (var + self.eps).sqrt()).view_as(x)
    return y * self.weight[None, :, None, None] + self.bias[None, :, None, None]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_is_as_close_to_fp32_as_diffusers(dtype, monkeypatch):
    """Same random weights: our bf16/fp16 encoder mean and decoder output are at least as close
    to fp32 as diffusers' in that dtype.

    Tolerance factor 1.05: the two compute the same operations in the same order, and the
    ratio of their errors measured 0.99–1.01 over seeds. A GroupNorm whose statistics are
    computed in half precision (PyTorch's keeps them in fp32) is 1.1–1.3× worse, caught below.
    """
    ref = reference(seed=1)
    ours = from_diffusers(ref).eval()
    g = torch.Generator().manual_seed(1)
    x, z = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, torch.randn(2, 4, 8, 8, generator=g) * 5
    with torch.no_grad():
        want_mean, want_image = ref.encode(x).latent_dist.mean, ref.decode(z).sample
        ref_half, ours_half = ref.to(dtype), ours.to(dtype)
        xh, zh = x.to(dtype), z.to(dtype)
        ref_err = (_rel_err(ref_half.encode(xh).latent_dist.mean, want_mean),
                   _rel_err(ref_half.decode(zh).sample, want_image))
        our_mean, our_image = ours_half.encode(xh).mean, ours_half.decode(zh)
        assert our_mean.dtype == our_image.dtype == dtype
        assert _rel_err(our_mean, want_mean) <= 1.05 * ref_err[0]
        assert _rel_err(our_image, want_image) <= 1.05 * ref_err[1]
        monkeypatch.setattr(torch.nn.GroupNorm, "forward", _group_norm_in_half)
        assert _rel_err(ours_half.encode(xh).mean, want_mean) > 1.05 * ref_err[0]  # the test can fail


def test_noise_is_drawn_on_the_generator_device_then_moved():
    """A seeded CPU generator gives the same sample whatever device or dtype the model runs in."""
    moments = torch.randn(2, 8, 3, 3)
    d32, d64 = DiagonalGaussian(moments), DiagonalGaussian(moments.double())
    a = d32.sample(torch.Generator().manual_seed(5))
    b = d64.sample(torch.Generator().manual_seed(5))
    assert b.dtype == torch.float64
    torch.testing.assert_close(a.double(), b, atol=1e-6, rtol=1e-6)
    on_meta = DiagonalGaussian(moments.to("meta")).sample(torch.Generator().manual_seed(5))  # CPU generator
    assert on_meta.device.type == "meta" and on_meta.shape == (2, 4, 3, 3)
    vae = ConvVAE(image_size=8, channels=(8, 16))
    s32 = vae.sample(3, torch.Generator().manual_seed(1))
    s64 = vae.double().sample(3, torch.Generator().manual_seed(1))
    torch.testing.assert_close(s32.double(), s64, atol=1e-5, rtol=1e-5)
    mu, logvar = torch.zeros(4, 2), torch.zeros(4, 2)
    torch.testing.assert_close(ConvVAE.reparameterize(mu.to("meta"), logvar.to("meta"),
                                                      torch.Generator().manual_seed(0)).shape, mu.shape)
    if torch.cuda.is_available():  # the real cross-device case
        on_gpu = DiagonalGaussian(moments.cuda()).sample(torch.Generator().manual_seed(5))
        torch.testing.assert_close(on_gpu.cpu(), a)


def test_bad_inputs():
    model = Autoencoder(AutoencoderConfig.small(block_out_channels=(32, 32, 32, 32)))
    with pytest.raises(ValueError, match=r"image side 20x24 is not divisible by 8"):
        model.encode(torch.randn(1, 3, 20, 24))
    with pytest.raises(ValueError, match=r"x must be an image batch \[B, 3, H, W\]"):
        model.encode(torch.randn(3, 16, 16))
    with pytest.raises(ValueError, match=r"z must be a latent batch \[B, 4, h, w\]"):
        model.decode(torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match="not divisible by norm_num_groups"):
        AutoencoderConfig(block_out_channels=(30,), norm_num_groups=8)
    from course_lib.autoencoder import config_from_diffusers

    with pytest.raises(ValueError, match="use_quant_conv"):
        config_from_diffusers({"use_quant_conv": False})


# ------------------------------------------------------------ teaching models
def test_small_vae_shapes_and_loss():
    vae = ConvVAE(image_size=16, latent_dim=2)
    x = torch.rand(5, 1, 16, 16) * 2 - 1
    recon, mu, logvar = vae(x, torch.Generator().manual_seed(0))
    assert recon.shape == x.shape and mu.shape == (5, 2) and logvar.shape == (5, 2)
    out = vae_loss(x, recon, mu, logvar, beta=2.0)
    torch.testing.assert_close(out["loss"], out["recon"] + 2.0 * out["kl"])
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(kl_to_standard_normal(mu, logvar), kl)
    assert vae.sample(3, torch.Generator().manual_seed(0)).shape == (3, 1, 16, 16)


def test_training_reduces_the_loss():
    from course_lib.data import load_digits_tensor

    x = load_digits_tensor(8)[0][:256]
    ae = ConvAutoencoder(image_size=8, channels=(8, 16))
    hist = train_autoencoder(ae, x, epochs=10, batch_size=32, progress=False)
    assert hist["loss"][-1] < 0.8 * hist["loss"][0]
    vae = ConvVAE(image_size=8, channels=(8, 16))
    hist = train_autoencoder(vae, x, epochs=3, beta=1.0, batch_size=16, progress=False)
    assert len(hist["kl"]) == 3


def test_train_autoencoder_is_seeded_and_leaves_the_global_rng_alone():
    from course_lib.data import load_digits_tensor

    x = load_digits_tensor(8)[0][:64]
    torch.manual_seed(11)
    untouched = torch.randn(3)
    runs = []
    for dtype in (torch.float32, torch.float64):  # the same draws, whatever the model's dtype
        torch.manual_seed(0)
        vae = ConvVAE(image_size=8, channels=(8, 16)).to(dtype)
        torch.manual_seed(11)
        runs.append(train_autoencoder(vae, x.to(dtype), epochs=2, beta=1.0, batch_size=16, progress=False))
        assert torch.equal(torch.randn(3), untouched)
    for key in ("loss", "recon", "kl"):
        assert runs[0][key] == pytest.approx(runs[1][key], rel=1e-3)


def test_teaching_models_bad_inputs():
    with pytest.raises(ValueError, match="multiple of 4"):
        ConvAutoencoder(image_size=10)
    with pytest.raises(ValueError, match=r"x must be \[B, 1, 16, 16\]"):
        ConvAutoencoder()(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="needs beta"):
        train_autoencoder(ConvVAE(), torch.zeros(4, 1, 16, 16), epochs=1, progress=False)
    with pytest.raises(ValueError, match="beta only applies"):
        train_autoencoder(ConvAutoencoder(), torch.zeros(4, 1, 16, 16), epochs=1, beta=1.0, progress=False)
    with pytest.raises(ValueError, match="beta must be"):
        vae_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), torch.zeros(1, 2), torch.zeros(1, 2), beta=-1)
