"""course-finetune-lora and course_lib.finetune: two DDP processes (torchrun, gloo) give the adapter
one process gives, peft loads it, a resumed run ends where an uninterrupted one does, bad input."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close

from course_lib import finetune
from course_lib.cli import finetune_lora
from course_lib.data.text import load_corpus
from tiny_gpt2 import save_tiny_gpt2

FAST = ["--lora-rank", "4", "--batch-size", "4", "--steps", "3", "--lr", "1e-3", "--eval-every", "1", "--save-every", "1",
        "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A model folder (GPT-2 with a 32-token context) and an ASCII text file to fine-tune it on."""
    root = tmp_path_factory.mktemp("finetune")
    text = load_corpus("prose", "train")[:20_000].encode("ascii", "ignore").decode()
    (root / "text.txt").write_text(text)
    return {"model": save_tiny_gpt2(root, n_positions=32), "text": root / "text.txt"}


def _args(data, out, *more):
    return ["--model", str(data["model"]), "--data", str(data["text"]), "--out", str(out), *FAST, *more]


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory):
    """The reference run: one process, the whole batch of 4 in one forward pass."""
    out = tmp_path_factory.mktemp("one")
    assert finetune_lora.main(_args(data, out, "--overwrite")) == 0
    return out


def _adapter(folder) -> dict:
    return load_file(folder / "adapter_model.safetensors")


def test_two_processes_give_the_adapter_of_one(data, one_process, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "course_lib.cli.finetune_lora", *_args(data, tmp_path / "ddp", "--micro-batch-size", "1")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es) on cpu, batch 4, micro-batches of 1" in done.stdout
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == sorted(finetune.OUTPUT_FILES)  # rank 0 only
    record = json.loads((tmp_path / "ddp" / "finetune.json").read_text())
    assert record["processes"] == 2 and record["accumulation_steps"] == 2  # 2 processes × 2 steps × 1 = 4
    ddp, ref = _adapter(tmp_path / "ddp"), _adapter(one_process)
    assert sorted(ddp) == sorted(ref)
    for key in ref:
        assert_close(ddp[key], ref[key], atol=1e-5, rtol=1e-4, msg=key)
    assert max(ref[k].abs().max() for k in ref if "lora_B" in k) > 1e-3  # B moved well beyond the tolerance
    ours = json.loads((one_process / "finetune.json").read_text())["history"]
    assert record["history"]["train_loss"] == pytest.approx(ours["train_loss"], rel=1e-5)


def test_peft_loads_the_adapter_and_matches_the_merged_course_model(data, one_process):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    from course_lib.gpt2 import from_hf
    from course_lib.lora import merge_lora
    from course_lib.peft_io import load_peft_adapter

    hf = transformers.GPT2LMHeadModel.from_pretrained(data["model"]).eval()
    ids = torch.randint(0, hf.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = hf(ids).logits
        ours = merge_lora(load_peft_adapter(from_hf(hf), one_process)).eval()(ids)
        theirs = peft.PeftModel.from_pretrained(hf, one_process).eval()(input_ids=ids).logits
    assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    assert (theirs - base).abs().max() > 1e-3  # the adapter is not a no-op


class _Interrupted(Exception):
    pass


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(data, one_process, tmp_path, monkeypatch):
    save = finetune._save_state

    def save_then_stop(out, model, optimizer, step, history, recipe):  # the machine goes down after step 2
        save(out, model, optimizer, step, history, recipe)
        if step == 2:
            raise _Interrupted

    monkeypatch.setattr(finetune, "_save_state", save_then_stop)
    with pytest.raises(_Interrupted):
        finetune_lora.main(_args(data, tmp_path))
    assert not (tmp_path / "adapter_model.safetensors").exists()
    monkeypatch.setattr(finetune, "_save_state", save)
    assert finetune_lora.main(_args(data, tmp_path, "--resume")) == 0
    resumed, ref = _adapter(tmp_path), _adapter(one_process)
    for key in ref:
        assert torch.equal(resumed[key], ref[key]), key
    history = json.loads((tmp_path / "finetune.json").read_text())["history"]
    assert history == json.loads((one_process / "finetune.json").read_text())["history"]


def test_step_batches_are_the_same_windows_whatever_the_split():
    tokens = torch.arange(1000)
    whole = finetune.StepBatches(tokens, 16, batch_size=8, micro_batch_size=8, seed=3)
    for world, micro in ((1, 2), (2, 4), (2, 1), (4, 2)):
        parts = [finetune.StepBatches(tokens, 16, 8, micro, seed=3, rank=r, world=world) for r in range(world)]
        k = parts[0].accum_steps
        assert k == 8 // world // micro
        for step in (0, 5):
            x = torch.cat([p(step * k + j)[0] for p in parts for j in range(k)])  # [8, 16]
            assert torch.equal(x, whole(step)[0])
    assert not torch.equal(whole(0)[0], whole(1)[0])  # every step has its own windows
    with pytest.raises(ValueError, match="micro-batch size"):
        finetune.StepBatches(tokens, 16, batch_size=8, micro_batch_size=3, seed=0)


def test_the_offline_default_tiny_gpt(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_LIB_CACHE", str(tmp_path / "zoo"))
    tiny = dict(steps=4, warmup_steps=1, eval_every=2, d_model=32, n_heads=2, n_layers=1, n_positions=32,
                batch_size=4, vocab_size=300, max_train_chars=20_000)
    zoo = [a for k, v in tiny.items() for a in ("--zoo-option", f"{k}={v}")]
    assert finetune_lora.main(["--data", "corpus:prose", "--out", str(tmp_path / "out"), *FAST, *zoo]) == 0
    out = capsys.readouterr().out
    assert "context 32 (the model's; 512 asked)" in out and "LoRA r=4 on 4 linear layers" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(finetune.OUTPUT_FILES)


def _error(args, capsys) -> str:
    rc = finetune_lora.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and err[0].startswith("course-finetune-lora: error: "), err
    return err[0]


def test_bad_input_ends_with_one_line(data, one_process, tmp_path, capsys):
    assert "micro-batch size" in _error(_args(data, tmp_path / "a", "--micro-batch-size", "3"), capsys)
    assert "steps must be >= 1" in _error(_args(data, tmp_path / "a", "--steps", "0"), capsys)
    assert "no such file or folder" in _error(
        ["--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "a"), *FAST], capsys)
    (tmp_path / "short.txt").write_text("too short")
    assert "too few" in _error(["--model", str(data["model"]), "--data", str(tmp_path / "short.txt"),
                                "--out", str(tmp_path / "a"), *FAST], capsys)
    assert "no run to resume" in _error(_args(data, tmp_path / "empty", "--resume"), capsys)
    assert "pass --overwrite" in _error(_args(data, one_process), capsys)
    assert "cannot resume with other settings: lr: saved 0.001, now 0.002" in _error(
        _args(data, one_process, "--resume", "--lr", "2e-3"), capsys)
    assert "already finished its 3 steps" in _error(_args(data, one_process, "--resume"), capsys)
    assert not (tmp_path / "a").exists()
