"""course_lib.zoo.shapes: tiny configs train deterministically, cache atomically, and sample."""

import pytest
import torch

from course_lib import zoo
from course_lib.zoo.shapes import ShapesLDM, ShapesLDMConfig, ShapesVAEConfig, load_ldm, load_vae

VAE = dict(n_images=64, steps=3, batch_size=8, block_out_channels=(8, 8, 16))
LDM = dict(vae=VAE, n_images=64, steps=3, batch_size=8, unet_channels=(16, 16), text_width=16, text_layers=1,
           text_heads=2)


def test_vae_trains_caches_and_reloads(zoo_cache):
    a = load_vae(VAE, progress=False)
    files = list(zoo_cache.glob("shapes-vae-*.safetensors"))
    assert len(files) == 1
    assert a.config.downsample_factor == 4 and a.config.scaling_factor > 0
    b = load_vae(VAE, progress=False)  # from the cache
    for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert b.config.scaling_factor == pytest.approx(a.config.scaling_factor)
    z = b.encode(torch.zeros(2, 3, 32, 32)).mean
    assert z.shape == (2, 4, 8, 8)


def test_vae_training_is_deterministic(zoo_cache):
    a = load_vae(VAE, progress=False)
    b = load_vae(VAE, progress=False, retrain=True)
    for v, v2 in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(v, v2)


def test_ldm_samples_and_reloads(zoo_cache):
    ldm = zoo.load("shapes-ldm", config=LDM, progress=False)
    assert isinstance(ldm, ShapesLDM) and len(ldm.history) == 3
    g = torch.Generator().manual_seed(0)
    x = ldm.sample(["a red circle", "a blue square on the left"], guidance_scale=5.0, n_steps=3, generator=g)
    assert x.shape == (2, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    again = load_ldm(LDM, progress=False)  # cached: same weights, same samples
    y = again.sample(["a red circle", "a blue square on the left"], n_steps=3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, y)
    assert len(list(zoo_cache.glob("shapes-ldm-*.safetensors"))) == 1


def test_config_errors(zoo_cache):
    with pytest.raises(TypeError, match="ShapesVAEConfig"):
        load_vae(config=3)
    with pytest.raises(TypeError):
        load_ldm(config=ShapesLDMConfig, progress=False)
    assert ShapesVAEConfig().autoencoder_config().downsample_factor == 4
    ldm = load_ldm(LDM, progress=False)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ldm.sample(["a pink circle"], n_steps=2)
    with pytest.raises(ValueError, match="prompt list is empty"):
        ldm.sample([], n_steps=2)
