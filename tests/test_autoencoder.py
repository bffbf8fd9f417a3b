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
