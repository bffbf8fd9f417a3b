"""course_lib.zoo "tiny-gpt": deterministic training, atomic caching keyed by config.

A tiny recipe (a few steps on a slice of the corpus) stands in for the full one,
so the test proves the machinery without the full training time.
"""

import pytest
import torch

from course_lib import zoo
from course_lib.gpt2 import GPTModel
from course_lib.tokenizer import BPETokenizer
from course_lib.zoo import tiny_gpt

TINY = dict(steps=6, warmup_steps=2, eval_every=3, d_model=32, n_heads=2, n_layers=1,
            n_positions=32, batch_size=4, vocab_size=300, max_train_chars=20_000)


def test_trains_caches_and_reloads(zoo_cache, monkeypatch):
    samples = []
    model, tok = zoo.load("tiny-gpt", progress=False, on_sample=lambda s, l, t: samples.append(s), **TINY)
    assert isinstance(model, GPTModel) and isinstance(tok, BPETokenizer)
    assert tok.vocab_size == model.vocab_size == 300
    assert samples == [3, 6]  # a sample every eval_every steps
    info = model.zoo_info
    assert info["val_perplexity"] == pytest.approx(torch.tensor(info["val_loss"]).exp().item(), rel=1e-6)
    assert len(info["train_loss"]) == 6 and [s for s, _ in info["val_loss_curve"]] == [3, 6]
    files = sorted(p.name for p in zoo_cache.iterdir())
    assert not [f for f in files if f.endswith(".tmp")]  # atomic writes leave no temporaries
    assert any(f.startswith("tiny-gpt-tokenizer-") for f in files)
    assert any(f.startswith("tiny-gpt-") and f.endswith(".safetensors") for f in files)

    def no_training(*a, **k):
        raise AssertionError("the cached model should have been loaded, not retrained")

    monkeypatch.setattr(tiny_gpt, "_train", no_training)
    again, tok2 = zoo.load("tiny-gpt", **TINY)
    assert tok2.merges == tok.merges
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    ids = torch.tensor([tok.encode("The value")])
    assert torch.equal(model(ids), again(ids))


def test_training_is_deterministic_and_keyed_by_config(zoo_cache, tmp_path, monkeypatch):
    a, _ = zoo.load("tiny-gpt", progress=False, **TINY)
    monkeypatch.setenv("COURSE_LIB_CACHE", str(tmp_path / "other"))  # a second, cold cache
    b, _ = zoo.load("tiny-gpt", progress=False, **TINY)
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), k
    # another config is another cache entry (so it is trained, never confused with this one)
    first = sorted((tmp_path / "other").glob("tiny-gpt-*.safetensors"))
    assert len(first) == 1
    zoo.load("tiny-gpt", progress=False, **{**TINY, "seed": 1})
    both = sorted((tmp_path / "other").glob("tiny-gpt-*.safetensors"))
    assert len(both) == 2 and first[0] in both


def test_cache_key_covers_config_data_and_recipe():
    from course_lib.zoo.cache import cache_path, fingerprint

    cfg = tiny_gpt.TinyGPTConfig(**TINY)
    base = cache_path("tiny-gpt", cfg, data=fingerprint("some text"), recipe=1)
    assert base == cache_path("tiny-gpt", cfg, data=fingerprint("some text"), recipe=1)
    assert base != cache_path("tiny-gpt", cfg, data=fingerprint("other text"), recipe=1)
    assert base != cache_path("tiny-gpt", cfg, data=fingerprint("some text"), recipe=2)
    assert base != cache_path("tiny-gpt", tiny_gpt.TinyGPTConfig(**{**TINY, "seed": 1}),
                              data=fingerprint("some text"), recipe=1)
    assert fingerprint(torch.zeros(2)) != fingerprint(torch.zeros(2, 1))  # the shape counts too
    with pytest.raises(TypeError, match="can only fingerprint"):
        fingerprint(3.0)


def test_bad_options(zoo_cache):
    with pytest.raises(ValueError, match="unknown tiny-gpt option.*n_layer.*allowed: domain.*on_sample"):
        zoo.load("tiny-gpt", n_layer=3)
    with pytest.raises(ValueError, match="unknown text domain"):
        zoo.load("tiny-gpt", **{**TINY, "domain": "poetry"})


def test_corrupt_cache_is_reported(zoo_cache):
    from course_lib.checkpoint import DamagedFileError
    from course_lib.zoo.cache import cache_dir, save_tensors

    model, _ = zoo.load("tiny-gpt", progress=False, **TINY)
    (weights,) = cache_dir().glob("tiny-gpt-*.safetensors")
    save_tensors(weights, {"wte.weight": torch.zeros(3, 3)})  # a readable file that is not this model
    with pytest.raises(DamagedFileError, match=rf"missing keys.*{weights.name}.*retrain=True"):
        zoo.load("tiny-gpt", **TINY)
    (tokenizer,) = cache_dir().glob("tiny-gpt-tokenizer-*.json")
    tokenizer.write_text(tokenizer.read_text()[:50])  # truncated
    with pytest.raises(DamagedFileError, match=rf"{tokenizer.name}.*retrain=True"):
        zoo.load("tiny-gpt", **TINY)
    again, _ = zoo.load("tiny-gpt", progress=False, retrain=True, **TINY)  # the remedy
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_global_rng_is_the_same_after_a_cold_or_a_warm_load(zoo_cache):
    torch.manual_seed(7)
    untouched = torch.randn(4)
    for _ in ("cold", "warm"):
        torch.manual_seed(7)
        zoo.load("tiny-gpt", device="cpu", progress=False, **TINY)
        assert torch.equal(torch.randn(4), untouched)
