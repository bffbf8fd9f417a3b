"""Shared helpers: argument checks, noise on the generator's device, seeded blocks,
dtype choice by device capability, parameter counts, progress bars."""

import pytest
import torch
from torch import nn

from course_lib import device as dev
from course_lib.checks import check_choice, check_int, check_number, check_probability
from course_lib.params import count_parameters
from course_lib.progress import progress_bar


def test_check_int_names_the_argument_and_the_range():
    assert check_int("k", 3, 1) == 3
    with pytest.raises(TypeError, match="k must be an int"):
        check_int("k", True, 1)
    with pytest.raises(ValueError, match=r"n_steps must be in \[1, 1000\], got 0"):
        check_int("n_steps", 0, 1, 1000)


def test_check_number_and_probability():
    assert check_number("t", 2, low=0, low_open=True) == 2.0
    with pytest.raises(ValueError, match="temperature must be > 0"):
        check_number("temperature", 0.0, low=0, low_open=True)
    with pytest.raises(ValueError, match="finite"):
        check_number("x", float("nan"))
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        check_probability("top_p", 1.5)
    with pytest.raises(ValueError, match="'ddim', 'ddpm'"):
        check_choice("sampler", "euler", ("ddim", "ddpm"))


def test_randn_draws_where_the_generator_lives_then_moves():
    g = torch.Generator().manual_seed(0)
    on_meta = dev.randn((2, 3), generator=g, device="meta")  # a device other than the generator's
    assert on_meta.device.type == "meta" and on_meta.shape == (2, 3)
    a = dev.randn((2, 3), generator=torch.Generator().manual_seed(0), device="cpu", dtype=torch.float64)
    b = torch.randn((2, 3), generator=torch.Generator().manual_seed(0)).double()
    assert a.dtype == torch.float64 and torch.equal(a, b)
    with pytest.raises(TypeError, match="generator"):
        dev.randn((2,), generator=0)


def test_seeded_is_repeatable_and_restores_the_global_state():
    torch.manual_seed(123)
    expected_next = torch.randn(3)
    torch.manual_seed(123)
    with dev.seeded(0):
        first = torch.randn(2)
    with dev.seeded(0):
        second = torch.randn(2)
    assert torch.equal(first, second)
    assert torch.equal(torch.randn(3), expected_next)  # as if the blocks never ran


def test_amp_dtype_by_capability(monkeypatch):
    assert dev.amp_dtype("cpu") == torch.float32
    assert dev.amp_dtype("mps") == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # a T4
    assert dev.amp_dtype("cuda") == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # an A100
    assert dev.amp_dtype("cuda") == torch.bfloat16
    with dev.autocast("cpu"):  # float32 on the CPU: no autocast at all
        assert not torch.is_autocast_enabled("cpu")


def test_count_parameters_counts_tied_weights_once():
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "head": head, "ln": nn.LayerNorm(4)})
    model["ln"].requires_grad_(False)
    count = count_parameters(model)
    assert count.total == 40 + 8 and count.trainable == 40
    assert abs(count.fraction - 40 / 48) < 1e-12


def test_progress_bar_outside_a_notebook_and_disabled(capsys):
    with progress_bar(3, "demo") as bar:
        for _ in range(3):
            bar.update(1, loss="0.5")
    assert "demo" in capsys.readouterr().err
    with progress_bar(3, "quiet", disable=True) as bar:
        bar.update(3)
    assert capsys.readouterr().err == ""


def test_atomic_files_round_trip_and_a_truncated_file_is_named(tmp_path):
    from course_lib.checkpoint import DamagedFileError, load_tensors, save_tensors

    path = tmp_path / "w.safetensors"
    save_tensors(path, {"a": torch.arange(6.0).view(2, 3)}, {"note": {"x": 1}})
    tensors, meta = load_tensors(path)
    assert torch.equal(tensors["a"], torch.arange(6.0).view(2, 3)) and meta == {"note": {"x": 1}}
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary file left behind
    path.write_bytes(path.read_bytes()[:-10])  # truncated, as by a full disk or a killed copy
    with pytest.raises(DamagedFileError, match="w.safetensors"):
        load_tensors(path)


def test_cpu_thread_choice_follows_the_idle_cores_and_the_wait_policy():
    assert dev.choose_cpu_threads(idle=2.0, limit=2) == 2  # an idle 2-core machine: both
    assert dev.choose_cpu_threads(idle=1.8, limit=2) == 2  # background noise still counts as idle
    assert dev.choose_cpu_threads(idle=1.6, limit=2) == 1  # a core 40% busy: no thread waits on it
    assert dev.choose_cpu_threads(idle=0.0, limit=2) == 1  # all busy: one thread, never fewer
    assert dev.choose_cpu_threads(idle=5.5, limit=16) == 5
    assert dev.choose_cpu_threads(idle=8.0, limit=4) == 4  # never above the limit
    assert dev.choose_cpu_threads(idle=0.0, limit=2, passive=True) == 2  # sleeping waiters: all threads
    with pytest.raises(ValueError, match="limit must be >= 1"):
        dev.choose_cpu_threads(1.0, 0)
    with pytest.raises(ValueError, match="idle must be >= 0"):
        dev.choose_cpu_threads(-1.0, 2)


def test_passive_wait_is_read_from_the_environment(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    assert not dev.passive_wait()
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert dev.passive_wait()
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert not dev.passive_wait()
    monkeypatch.setenv("GOMP_SPINCOUNT", "0")
    assert dev.passive_wait()


def test_idle_cores_from_proc_stat_ticks(tmp_path):
    stat = tmp_path / "stat"
    # cpu0: 30 idle + 10 iowait of 100 ticks; cpu1 the same; cpu2 not ours
    stat.write_text("cpu  1 2 3 4 5 6 7 8 9 10\n"
                    "cpu0 40 0 20 30 10 0 0 0 0 0\ncpu1 40 0 20 30 10 0 0 0 0 0\ncpu2 0 0 0 100 0 0 0 0 0 0\n"
                    "intr 12345\n")
    before = dev._cpu_ticks({0, 1}, str(stat))
    assert before == {0: (40, 100), 1: (40, 100)}
    after = {0: (40 + 50, 200), 1: (40 + 25, 200)}  # then: cpu0 half idle, cpu1 a quarter idle
    assert dev._idle_between(before, after) == pytest.approx(0.75)
    with pytest.raises(OSError, match="no per-CPU lines"):
        dev._cpu_ticks({7}, str(stat))


def test_cpu_threads_sets_and_restores_and_auto_keeps_a_lower_setting(monkeypatch):
    monkeypatch.setattr(dev, "passive_wait", lambda: False)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with dev.cpu_threads(1) as n:
            assert n == 1 and torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        monkeypatch.setattr(dev, "idle_cores", lambda interval=0.2: 8.0)  # an idle machine
        monkeypatch.setattr(dev, "usable_cores", lambda: 8)
        with dev.cpu_threads("auto") as n:
            assert n == 2  # not above what PyTorch was set to
        monkeypatch.setattr(dev, "idle_cores", lambda interval=0.2: 0.4)  # everything busy
        with dev.cpu_threads("auto") as n:
            assert n == 1 and torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="threads must be >= 1"):
            with dev.cpu_threads(0):
                pass
    finally:
        torch.set_num_threads(previous)
