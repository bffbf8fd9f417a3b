"""course-generate: repeatable under a seed on the offline tiny GPT, the same greedy text as
transformers on a GPT-2 folder (with and without a peft adapter), one-line errors."""

import json

import pytest
import torch

from course_lib.cli import generate
from tiny_gpt2 import random_peft_model, save_tiny_gpt2

# a tiny-gpt recipe that trains in seconds (zoo.load("tiny-gpt") with these overrides)
TINY_GPT = dict(steps=6, warmup_steps=2, eval_every=3, d_model=32, n_heads=2, n_layers=1, n_positions=32,
                batch_size=4, vocab_size=300, max_train_chars=20_000)
ZOO = [arg for k, v in TINY_GPT.items() for arg in ("--zoo-option", f"{k}={json.dumps(v)}")]
FAST = ["--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module", autouse=True)
def _zoo_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COURSE_LIB_CACHE", str(tmp_path_factory.mktemp("zoo")))
        yield


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    return save_tiny_gpt2(tmp_path_factory.mktemp("gpt2"), n_positions=64)


def _run(args, capsys) -> str:
    assert generate.main(args) == 0
    return capsys.readouterr().out


def test_the_same_seed_gives_the_same_text(capsys):
    args = ["--prompt", "The", "--max-new-tokens", "12", "--sampler", "temperature", "--temperature", "1.5",
            "--num-samples", "3", *ZOO, *FAST]
    first = _run([*args, "--seed", "0"], capsys)
    assert _run([*args, "--seed", "0"], capsys) == first
    assert _run([*args, "--seed", "1"], capsys) != first
    assert [line for line in first.splitlines() if line.startswith("===")] == [
        f"=== prompt 1, sample {i} ===" for i in (1, 2, 3)]


@pytest.mark.parametrize("sampler", ["greedy", "top-k", "top-p", "min-p"])
def test_each_sampler_continues_the_prompt(sampler, capsys, tmp_path):
    out = tmp_path / "samples.json"
    text = _run(["--prompt", "The value", "--sampler", sampler, "--max-new-tokens", "8", "--out", str(out),
                 *ZOO, *FAST], capsys)
    assert text.startswith("The value")
    saved = json.loads(out.read_text())
    assert saved["settings"]["sampler"] == sampler and saved["samples"][0]["texts"] == [text[:-1]]


def _hf_greedy(model, tokenizer, prompt, n):
    ids = torch.tensor([tokenizer.encode(prompt)])
    out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return prompt + tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_greedy_text_equals_transformers_also_with_an_adapter(gpt2_folder, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("peft")
    hf = transformers.GPT2LMHeadModel.from_pretrained(gpt2_folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(gpt2_folder)
    args = ["--model", str(gpt2_folder), "--prompt", "Hello", "--sampler", "greedy", "--max-new-tokens", "20", *FAST]
    assert _run(args, capsys) == _hf_greedy(hf, tokenizer, "Hello", 20) + "\n"  # print's newline

    adapted = random_peft_model(gpt2_folder, ["c_attn", "c_proj", "c_fc"], r=4, alpha=8, scale=0.5)
    adapted.save_pretrained(tmp_path / "adapter")
    with_adapter = _run([*args, "--adapter", str(tmp_path / "adapter")], capsys)
    assert with_adapter == _hf_greedy(adapted.eval(), tokenizer, "Hello", 20) + "\n"
    assert with_adapter != _hf_greedy(hf, tokenizer, "Hello", 20) + "\n"  # the adapter changed the text


def _error(args, capsys) -> str:
    rc = generate.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and err[0].startswith("course-generate: error: "), err
    return err[0]


def test_bad_input_ends_with_one_line(gpt2_folder, tmp_path, capsys):
    assert "> the context length n_positions=32" in _error(
        ["--prompt", "word " * 40, "--max-new-tokens", "10", *ZOO, *FAST], capsys)  # the prompt alone
    assert "exceeds the context length n_positions=32" in _error(
        ["--prompt", "word", "--max-new-tokens", "40", *ZOO, *FAST], capsys)  # prompt and new tokens
    assert "--top-k does not apply to --sampler top-p" in _error(["--prompt", "x", "--top-k", "5", *FAST], capsys)
    assert "--top-p must be in (0, 1]" in _error(["--prompt", "x", "--top-p", "1.5", *FAST], capsys)
    assert "--temperature must be > 0" in _error(["--prompt", "x", "--temperature", "0", *FAST], capsys)
    assert "--adapter" in _error(["--prompt", "x", "--adapter", str(tmp_path / "none"), *FAST], capsys)
    assert "--zoo-option applies to zoo: models only" in _error(
        ["--model", str(gpt2_folder), "--prompt", "x", *ZOO, *FAST], capsys)
    assert "not a local folder" in _error(["--model", str(tmp_path / "no-model"), "--prompt", "x", *FAST], capsys)
    (tmp_path / "taken.json").write_text("{}")
    assert "pass --overwrite" in _error(["--prompt", "x", "--out", str(tmp_path / "taken.json"), *FAST], capsys)
    with pytest.raises(SystemExit) as exc:
        generate.main(["--prompt", "x", "--sampler", "beam"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "invalid choice: 'beam'" in err[0]
