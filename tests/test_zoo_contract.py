"""The zoo contract: every model loads the same way (``course_lib.zoo`` and ``course_lib.zoo.common``)."""

import dataclasses
import importlib
import inspect

import pytest
import torch

from course_lib import zoo
from course_lib.checkpoint import DamagedFileError
from course_lib.zoo.common import load_cached, load_or_train, make_config


def loader(name):
    module, func, _ = zoo.REGISTRY[name]
    return getattr(importlib.import_module(f"course_lib.zoo.{module}"), func)


@pytest.mark.parametrize("name", zoo.names())
def test_every_model_takes_the_same_keywords(name):
    params = inspect.signature(loader(name)).parameters
    for keyword, default in (("device", None), ("retrain", False), ("progress", True)):
        assert params[keyword].kind is inspect.Parameter.KEYWORD_ONLY and params[keyword].default == default, keyword
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())  # **overrides
    assert zoo.REGISTRY[name][2]  # a documented return type


@pytest.mark.parametrize("name", zoo.names())
def test_unknown_options_are_refused_before_any_work(name, zoo_cache):
    with pytest.raises(ValueError, match=rf"unknown {name} option\(s\) no_such_option; allowed: .*device, retrain, "
                                         rf"progress"):
        zoo.load(name, no_such_option=1)
    assert not zoo_cache.exists() or not any(zoo_cache.iterdir())  # nothing trained or written


def test_unknown_names_list_the_models():
    with pytest.raises(ValueError, match="unknown zoo model 'gpt-5'; available: digits-ddpm, shapes-ldm, shapes-vae, "
                                         "tiny-gpt"):
        zoo.load("gpt-5")
    with pytest.raises(TypeError, match="must be a str"):
        zoo.load(3)


@dataclasses.dataclass(frozen=True)
class Inner:
    width: int = 4
    rate: float = 0.5


@dataclasses.dataclass(frozen=True)
class Outer:
    inner: Inner = Inner()
    sizes: tuple = (1, 2)
    steps: int = 10
    seed: int = 0


def test_make_config_applies_overrides_with_checks():
    assert make_config(Outer, None, {}, "toy") == Outer()
    cfg = make_config(Outer, {"steps": 3}, {"inner": {"rate": 1}, "sizes": [3]}, "toy")
    assert cfg == Outer(inner=Inner(4, 1.0), sizes=(3,), steps=3)  # nested dicts change only what they name
    with pytest.raises(ValueError, match="unknown toy option\\(s\\) stepz; allowed: inner, sizes, steps, seed, "
                                         "device, retrain, progress, on_sample"):
        make_config(Outer, None, {"stepz": 1}, "toy", extra_options=("on_sample",))
    with pytest.raises(ValueError, match="unknown toy.inner option\\(s\\) depth; allowed: width, rate$"):
        make_config(Outer, None, {"inner": {"depth": 2}}, "toy")
    with pytest.raises(TypeError, match="toy option steps must be of type int like its default 10, got float 2.5"):
        make_config(Outer, None, {"steps": 2.5}, "toy")
    with pytest.raises(TypeError, match="config must be a Outer or a dict"):
        make_config(Outer, Inner(), {}, "toy")


def test_load_or_train_trains_once_announces_and_restores_the_global_rng(tmp_path, capsys):
    calls = []

    def fit():
        calls.append(1)
        return {"w": torch.randn(3)}, {"note": "trained"}  # draws from the global generator, seeded

    path = tmp_path / "toy.safetensors"
    torch.manual_seed(99)
    expected = torch.randn(2)
    torch.manual_seed(99)
    cold, meta = load_or_train("toy", path, fit, seed=5, estimate_s=200)
    assert torch.equal(torch.randn(2), expected) and meta == {"note": "trained"}
    assert "zoo: training toy (not cached yet, about 3 min on a 2-core CPU" in capsys.readouterr().out
    warm, _ = load_or_train("toy", path, fit, seed=5)
    assert calls == [1] and torch.equal(cold["w"], warm["w"]) and capsys.readouterr().out == ""
    with torch.random.fork_rng():
        torch.manual_seed(5)
        assert torch.equal(cold["w"], torch.randn(3))  # training ran inside seeded(seed)
    again, _ = load_or_train("toy", path, fit, seed=5, retrain=True, progress=False)
    assert calls == [1, 1] and capsys.readouterr().out == "" and torch.equal(again["w"], cold["w"])


def test_damaged_or_mismatched_cache_files_name_the_file_and_the_remedy(tmp_path):
    path = tmp_path / "toy.safetensors"
    tensors, _ = load_or_train("toy", path, lambda: ({"weight": torch.ones(2, 3)}, {}), seed=0, progress=False)
    with pytest.raises(DamagedFileError, match=r"toy.safetensors does not fit the model.*retrain=True"):
        load_cached(torch.nn.Linear(3, 2), tensors, path, "toy")  # no bias in the file
    assert load_cached(torch.nn.Linear(3, 2, bias=False), tensors, path, "toy").weight.sum() == 6
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DamagedFileError, match=r"cached toy weights: .*toy.safetensors.*zoo.load\('toy', retrain=True\)"):
        load_or_train("toy", path, lambda: pytest.fail("must not retrain silently"), seed=0)
