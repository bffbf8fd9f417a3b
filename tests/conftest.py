"""Shared pytest setup: no network, deterministic seeds, a private zoo cache."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def zoo_cache(tmp_path, monkeypatch):
    """A fresh, empty zoo cache directory for tests that train or cache models."""
    monkeypatch.setenv("COURSE_LIB_CACHE", str(tmp_path / "zoo"))
    return tmp_path / "zoo"


@pytest.fixture
def assert_global_rng_untouched(zoo_cache):
    """``check(load)``: after ``load()`` on a cold and then a warm zoo cache, the global RNG
    draws what it would have drawn without the load (training uses its own generators)."""
    def check(load):
        torch.manual_seed(123)
        untouched = torch.randn(5)
        for _ in ("cold", "warm"):
            torch.manual_seed(123)
            load()
            assert torch.equal(torch.randn(5), untouched)
    return check


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory):
    """A Hugging Face cache folder holding the tiny models of tests/fixtures/make_local_hub.py (built once)."""
    from fixtures.make_local_hub import build

    cache = tmp_path_factory.mktemp("hf_cache")
    build(cache)
    return cache


@pytest.fixture
def hf_cache(monkeypatch):
    """Point huggingface_hub (and so transformers, diffusers and course_lib.hub) at a cache folder, offline.

    ``hf_cache(folder)`` switches to ``folder``; the library reads its cache location and
    offline flag from ``huggingface_hub.constants`` on every call.
    """
    from huggingface_hub import constants

    def use(folder):
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(folder))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        monkeypatch.setenv("HF_HUB_CACHE", str(folder))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.delenv("COURSE_LIB_WORLD", raising=False)
        return folder

    return use


def pytest_addoption(parser):
    parser.addoption("--browser", action="store_true",
                     help="run tests/browser: JupyterLab in headless Chromium (make browser-test)")


def pytest_ignore_collect(collection_path, config):
    """tests/browser starts JupyterLab and Chromium: only with --browser (make browser-test)."""
    if collection_path.name == "browser" and collection_path.parent == Path(__file__).parent:
        return not config.getoption("--browser")
    return None
