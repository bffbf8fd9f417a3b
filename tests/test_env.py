"""Device selection and the environment check (offline, must not hang)."""

import io
import socket
import time

import torch

from course_lib import env
from course_lib.device import get_device, seed_everything


def test_get_device_is_cpu_without_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert get_device() == torch.device("cpu")


def test_get_device_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert get_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_device() == torch.device("cuda")


def test_seed_everything_repeats_draws():
    seed_everything(3)
    a = torch.randn(4)
    seed_everything(3)
    assert torch.equal(a, torch.randn(4))


def test_seed_everything_rejects_non_int():
    import pytest

    with pytest.raises(TypeError, match="seed must be an int"):
        seed_everything(1.5)


def test_offline_check_never_touches_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def forbidden(*args, **kwargs):
        raise AssertionError("network used while HF_HUB_OFFLINE=1")

    monkeypatch.setattr(socket, "create_connection", forbidden)
    out = io.StringIO()
    start = time.perf_counter()
    assert env.check_environment(file=out) is True
    assert time.perf_counter() - start < 10
    text = out.getvalue()
    assert "[OK]   torch" in text and "world: offline" in text
    assert env.world() == "offline"


def test_unreachable_hub_times_out_quickly(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def slow_then_fail(address, timeout):
        assert timeout <= 0.5, "the reachability probe must use the caller's short timeout"
        raise socket.timeout("simulated: no route")

    monkeypatch.setattr(socket, "create_connection", slow_then_fail)
    assert env.hub_reachable(timeout=0.5) is False
    assert env.world(timeout=0.5) == "offline"


def test_missing_package_is_a_fail_line():
    rows = env.package_status([("definitely_not_a_module_xyz", "nope")])
    assert rows[0][0] == "nope" and rows[0][1] is False


def test_bad_timeout_is_rejected():
    import pytest

    with pytest.raises(ValueError, match="timeout must be > 0"):
        env.hub_reachable(timeout=0)
