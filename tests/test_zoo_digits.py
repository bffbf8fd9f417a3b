"""digits-ddpm zoo model: caching, determinism and the sample API (a tiny config, a few steps)."""

import pytest
import torch

from course_lib.zoo import digits_ddpm, load

TINY = dict(block_out_channels=(8, 16), norm_num_groups=4, cond_dim=8, steps=3, batch_size=8, warmup_steps=1)


def test_trains_caches_and_reloads(zoo_cache, monkeypatch):
    model = load("digits-ddpm", device=torch.device("cpu"), progress=False, **TINY)
    assert len(list(zoo_cache.glob("digits-ddpm-*.safetensors"))) == 1
    assert len(model.loss_history) == 3 and model.train_seconds > 0
    assert model.betas.shape == (1000,)

    def no_training(*args, **kwargs):
        raise AssertionError("a cached model must not be retrained")

    monkeypatch.setattr(digits_ddpm, "train", no_training)
    again = load("digits-ddpm", device=torch.device("cpu"), progress=False, **TINY)
    for (k, a), (_, b) in zip(model.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert again.loss_history == pytest.approx(model.loss_history)


def test_training_is_deterministic(zoo_cache):
    a = load("digits-ddpm", device=torch.device("cpu"), progress=False, **TINY)
    b = load("digits-ddpm", device=torch.device("cpu"), progress=False, retrain=True, **TINY)
    assert a.loss_history == b.loss_history
    for (k, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), k
    c = load("digits-ddpm", device=torch.device("cpu"), progress=False, **{**TINY, "seed": 1})
    assert c.loss_history != a.loss_history  # the seed is part of the config and matters


def test_sample_api(zoo_cache):
    model = load("digits-ddpm", device=torch.device("cpu"), progress=False, **TINY)
    labels = torch.tensor([0, 3, 9])
    x = model.sample(labels, guidance_scale=3.0, n_steps=5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, 8, 8) and x.min() >= -1 and x.max() <= 1
    y = model.sample(labels, guidance_scale=3.0, n_steps=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, y)
    x2, traj = model.sample([1, 2], n_steps=4, return_trajectory=True)
    assert traj.x_t.shape == (4, 2, 1, 8, 8) and traj.timesteps == model.ddim(4).timesteps.tolist()
    # guidance changes the result; w = 1 needs no unconditional pass but works
    x_w1 = model.sample(labels, guidance_scale=1.0, n_steps=5, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(x, x_w1)


def test_bad_inputs(zoo_cache):
    model = load("digits-ddpm", device=torch.device("cpu"), progress=False, **TINY)
    with pytest.raises(ValueError, match="labels must be digits 0-9"):
        model.sample([3, 12])
    with pytest.raises(ValueError, match="labels must be a non-empty 1-D integer"):
        model.sample(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="n_steps must be in"):
        model.sample([1], n_steps=0)
    with pytest.raises(ValueError, match="unknown digits-ddpm option.*stepz.*allowed: image_size"):
        load("digits-ddpm", progress=False, stepz=3)
    with pytest.raises(TypeError, match="digits-ddpm option steps must be of type int"):
        load("digits-ddpm", progress=False, steps=2.5)


def test_global_rng_is_the_same_after_a_cold_or_a_warm_load(assert_global_rng_untouched):
    assert_global_rng_untouched(lambda: load("digits-ddpm", device="cpu", progress=False, **TINY))


def test_cold_and_warm_loads_give_the_same_model_and_training_is_announced(zoo_cache, capsys):
    cold = load("digits-ddpm", device="cpu", **TINY)
    out = capsys.readouterr().out
    assert "zoo: training digits-ddpm" in out and "2-core CPU" in out and str(zoo_cache) in out
    warm = load("digits-ddpm", device="cpu", **TINY)
    assert capsys.readouterr().out == ""  # nothing to announce on a warm cache
    for (k, a), b in zip(cold.model.state_dict().items(), warm.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert cold.loss_history == warm.loss_history and cold.train_seconds == warm.train_seconds


def test_device_is_not_part_of_the_cache_key(zoo_cache, monkeypatch):
    trained = load("digits-ddpm", device="cpu", progress=False, **TINY)
    monkeypatch.setattr(digits_ddpm, "train", lambda *a, **k: pytest.fail("must come from the cache"))
    on_meta = load("digits-ddpm", device="meta", progress=False, **TINY)  # any other device: same file
    assert on_meta.device.type == "meta"
    (cached,) = zoo_cache.glob("digits-ddpm-*.safetensors")
    from course_lib.checkpoint import load_tensors

    tensors, _ = load_tensors(cached)
    assert all(t.device.type == "cpu" for t in tensors.values())  # weights are cached on the CPU
    if torch.cuda.is_available():  # the real cross-device case
        on_gpu = load("digits-ddpm", device="cuda", progress=False, **TINY)
        for (k, a), b in zip(trained.model.state_dict().items(), on_gpu.model.state_dict().values()):
            assert torch.equal(a, b.cpu()), k


def test_a_truncated_cache_file_names_the_file_and_the_remedy(zoo_cache):
    from course_lib.checkpoint import DamagedFileError

    load("digits-ddpm", device="cpu", progress=False, **TINY)
    (cached,) = zoo_cache.glob("digits-ddpm-*.safetensors")
    cached.write_bytes(cached.read_bytes()[:-100])
    with pytest.raises(DamagedFileError, match=rf"{cached.name}.*retrain=True"):
        load("digits-ddpm", device="cpu", progress=False, **TINY)
    again = load("digits-ddpm", device="cpu", progress=False, retrain=True, **TINY)  # the remedy works
    assert len(again.loss_history) == TINY["steps"]


def test_classifier_judges_real_digits():
    svm, held_out = digits_ddpm.digit_classifier(train_fraction=0.8)
    assert held_out > 0.97
    images, labels = digits_ddpm.load_digits_tensor(8)
    assert (digits_ddpm.classify(svm, images[:200]) == labels[:200]).float().mean() > 0.97
