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
    monkeypatch.delenv("COURSE_LIB_WORLD", raising=False)

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
    monkeypatch.delenv("COURSE_LIB_WORLD", raising=False)

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


# ----------------------------------------------------------------------------- the two worlds


def _no_network(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("network used")

    monkeypatch.setattr(socket, "create_connection", forbidden)


def test_cache_only_setup_is_pretrained(local_hub, hf_cache, monkeypatch):
    hf_cache(local_hub)  # HF_HUB_OFFLINE=1, the cache holds gpt2 and SD v1.5
    _no_network(monkeypatch)
    assert env.world(needs=["gpt2"]) == "pretrained"
    assert env.world(needs=["gpt2", "stable-diffusion-v1-5/stable-diffusion-v1-5"]) == "pretrained"
    assert env.describe_world(["gpt2"]) == f"pretrained: gpt2 found in the Hugging Face cache at {local_hub}"


def test_empty_cache_and_no_hub_is_offline(tmp_path, hf_cache, monkeypatch):
    hf_cache(tmp_path)
    _no_network(monkeypatch)
    assert env.world(needs=["gpt2"]) == "offline"
    assert env.describe_world(["gpt2"]) == (f"offline: HF_HUB_OFFLINE=1 and gpt2 is not in the Hugging Face "
                                            f"cache at {tmp_path}")


def test_a_need_missing_from_the_cache_makes_it_offline(local_hub, hf_cache, monkeypatch):
    hf_cache(local_hub)
    _no_network(monkeypatch)
    assert env.world(needs=["gpt2", "gpt2-xl"]) == "offline"
    assert "gpt2-xl is not in the Hugging Face cache" in env.describe_world(["gpt2", "gpt2-xl"])


def test_unreachable_hub_with_an_empty_cache_says_so(tmp_path, hf_cache, monkeypatch):
    hf_cache(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def no_route(address, timeout):
        raise socket.timeout("simulated: no route")

    monkeypatch.setattr(socket, "create_connection", no_route)
    reason = env.describe_world(["gpt2"], timeout=0.5)
    assert reason.startswith("offline: huggingface.co is not reachable within 0.5 s and gpt2 is not in")


def test_reachable_hub_is_pretrained_even_with_an_empty_cache(tmp_path, hf_cache, monkeypatch):
    hf_cache(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(env, "hub_reachable", lambda timeout=2.0: True)
    assert env.decide_world(["gpt2"]) == ("pretrained", "pretrained: huggingface.co is reachable, "
                                                        "gpt2 can be downloaded")


def test_override_forces_the_world(local_hub, tmp_path, hf_cache, monkeypatch):
    hf_cache(local_hub)
    monkeypatch.setenv("COURSE_LIB_WORLD", "offline")  # what make test / make notebooks set
    assert env.world(needs=["gpt2"]) == "offline"
    assert env.describe_world(["gpt2"]) == "offline: forced by COURSE_LIB_WORLD=offline"
    hf_cache(tmp_path)
    monkeypatch.setenv("COURSE_LIB_WORLD", "pretrained")
    assert env.world(needs=["gpt2"]) == "pretrained"


def test_bad_override_and_needs_are_refused(monkeypatch):
    import pytest

    monkeypatch.setenv("COURSE_LIB_WORLD", "online")
    with pytest.raises(ValueError, match="COURSE_LIB_WORLD='online' is not a world; allowed: offline, pretrained"):
        env.world(needs=["gpt2"])
    monkeypatch.delenv("COURSE_LIB_WORLD")
    with pytest.raises(TypeError, match="needs must be hub ids"):
        env.world(needs=[3])
