"""tools/notebook_times.py: one source for the times quoted in notebook headers and the README."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("notebook_times", ROOT / "tools" / "notebook_times.py")
nt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(nt)


def test_durations_and_phrases():
    assert nt.duration(13.2) == "13 s" and nt.duration(150) == "2.5 min"
    entry = {"seconds": 150, "trained": [{"model": "tiny-gpt", "train_seconds": 110}]}
    assert nt.cpu_phrase(entry, 2).startswith("2.5 min on a 2-core CPU, of which training tiny-gpt (1.8 min)")
    assert nt.gpu_phrase("03_gpt2", None) == "no GPU run recorded yet"
    assert nt.gpu_phrase("03_gpt2", {"device": "a T4", "notebooks": {"03_gpt2": {"seconds": 20}}}) == "20 s on a T4"


def test_write_updates_the_header_line_and_the_readme_row(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# 03 · GPT-2\n", "\n",
                                                                         "**Time:** a guess\n", "more\n"]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "notebooks" / "03_gpt2.ipynb").write_text(json.dumps(nb))
    readme = tmp_path / "README.md"
    readme.write_text("| # | nb | what | CPU | GPU |\n|---|---|---|---|---|\n| 03 | [GPT-2](x) | blocks | old | old |\n")
    times = tmp_path / "times.json"
    times.write_text(json.dumps({"machine": {"cpus": 2}, "notebooks": {"03_gpt2": {"seconds": 40, "trained": []}}}))
    monkeypatch.setattr(nt, "ROOT", tmp_path)
    monkeypatch.setattr(nt, "CPU_FILE", times)
    monkeypatch.setattr(nt, "GPU_FILE", tmp_path / "missing.json")
    monkeypatch.setattr(nt, "README", readme)
    nt.write()
    source = "".join(json.loads((tmp_path / "notebooks" / "03_gpt2.ipynb").read_text())["cells"][0]["source"])
    assert "**Time:** 40 s on a 2-core CPU (measured with `make notebooks`); GPU: no GPU run recorded yet." in source
    assert "a guess" not in source and source.endswith("more\n")
    assert "| 03 | [GPT-2](x) | blocks | 40 s | — |" in readme.read_text()
