"""Shared pytest setup: no network, deterministic seeds, a private zoo cache."""

import os

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
