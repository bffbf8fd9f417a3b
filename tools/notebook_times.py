"""Notebook times, measured once and written everywhere they are quoted.

    python tools/notebook_times.py execute notebooks/*.ipynb   # what `make notebooks` runs
    python tools/notebook_times.py write                       # headers + README from the measurements

``execute`` re-executes each notebook in place (a fresh kernel, top to bottom, the
offline world that `make notebooks` sets), times it, and notes which zoo models it
trained (the zoo cache files that appeared during the run, with the training time
stored in them). It records everything in ``benchmarks/results/notebook_times.json``.

``write`` rewrites the line starting with ``**Time:**`` in the first cell of every
notebook, and the CPU/GPU columns of the README's course map, from that file and
from ``benchmarks/results/gpu.json`` (written by `make gpu-check` on a CUDA machine;
without it the GPU column says that no GPU run is recorded). One source, so a
header never disagrees with the README.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CPU_FILE = ROOT / "benchmarks" / "results" / "notebook_times.json"
GPU_FILE = ROOT / "benchmarks" / "results" / "gpu.json"
README = ROOT / "README.md"
ZOO_MODELS = ("tiny-gpt", "digits-ddpm", "shapes-vae", "shapes-ldm")
TIME_LINE = re.compile(r"^\*\*Time:\*\*.*$", re.M)


def _zoo_cache() -> Path:
    return Path(os.environ.get("COURSE_LIB_CACHE") or Path.home() / ".cache" / "course_lib")


def _weights(cache: Path) -> set[Path]:
    return set(cache.glob("*.safetensors")) if cache.is_dir() else set()


def _train_seconds(path: Path) -> float | None:
    """The training time a zoo checkpoint stores in its metadata (None when it has none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    seconds = meta.get("train_seconds", (meta.get("info") or {}).get("train_seconds"))
    return None if seconds is None else round(float(seconds), 1)


def _trained(new_files: set[Path]) -> list[dict]:
    out = []
    for path in sorted(new_files):
        name = next((m for m in ZOO_MODELS if path.name.startswith(m + "-")), None)
        if name is not None:
            out.append({"model": name, "train_seconds": _train_seconds(path)})
    return out


def execute(notebooks: list[str]) -> None:
    times = json.loads(CPU_FILE.read_text()) if CPU_FILE.exists() else {}
    times.setdefault("notebooks", {})
    cache = _zoo_cache()
    for nb in notebooks:
        before = _weights(cache)
        print(f"== {nb}", flush=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                        "--inplace", "--ExecutePreprocessor.kernel_name=python3",
                        "--ExecutePreprocessor.timeout=900", nb], check=True)
        seconds = round(time.perf_counter() - start, 1)
        trained = _trained(_weights(cache) - before)
        times["notebooks"][Path(nb).stem] = {"seconds": seconds, "trained": trained}
        print(f"== {nb}: {seconds:.0f} s" + "".join(f", trained {t['model']}" for t in trained), flush=True)
    times["machine"] = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                        "torch_threads": _torch_threads(), "date": datetime.date.today().isoformat()}
    CPU_FILE.parent.mkdir(parents=True, exist_ok=True)
    CPU_FILE.write_text(json.dumps(times, indent=1, sort_keys=True) + "\n")


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def duration(seconds: float) -> str:
    """13 -> "13 s", 150 -> "2.5 min"."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def cpu_phrase(entry: dict, cpus: int) -> str:
    text = f"{duration(entry['seconds'])} on a {cpus}-core CPU"
    trained = [t for t in entry.get("trained", []) if t.get("train_seconds")]
    if trained:
        parts = " and ".join(f"{t['model']} ({duration(t['train_seconds'])})" for t in trained)
        text += (f", of which training {parts} the first time it is needed — later notebooks"
                 " read it from the zoo cache")
    return text


def gpu_phrase(name: str, gpu: dict | None) -> str:
    if not gpu:
        return "no GPU run recorded yet"
    entry = gpu.get("notebooks", {}).get(name)
    if entry is None:
        return "not in the last GPU run"
    return f"{duration(entry['seconds'])} on {gpu.get('device', 'a GPU')}"


def write() -> None:
    cpu = json.loads(CPU_FILE.read_text())
    gpu = json.loads(GPU_FILE.read_text()) if GPU_FILE.exists() else None
    cpus = cpu["machine"]["cpus"]
    rows = {}
    for name, entry in sorted(cpu["notebooks"].items()):
        path = ROOT / "notebooks" / f"{name}.ipynb"
        nb = json.loads(path.read_text())
        first = "".join(nb["cells"][0]["source"])
        line = (f"**Time:** {cpu_phrase(entry, cpus)} (measured with `make notebooks`); "
                f"GPU: {gpu_phrase(name, gpu)}.")
        if not TIME_LINE.search(first):
            raise SystemExit(f"{path}: the first cell has no line starting with **Time:**")
        new = TIME_LINE.sub(lambda m: line, first, count=1)
        if new != first:
            nb["cells"][0]["source"] = new.splitlines(keepends=True)
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        trained = ", ".join(f"trains {t['model']}, {duration(t['train_seconds'])}"
                            for t in entry.get("trained", []) if t.get("train_seconds"))
        rows[name[:2]] = (duration(entry["seconds"]) + (f" ({trained})" if trained else ""),
                          gpu_phrase(name, gpu) if gpu else "—")
    _write_readme(rows)


def _write_readme(rows: dict[str, tuple[str, str]]) -> None:
    """Replace the last two columns of the course-map rows ``| 03 | [GPT-2](...) | ... | cpu | gpu |``."""
    lines = README.read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        m = re.match(r"^\| (\d\d) \|", line)
        if m and m.group(1) in rows:
            cells = line.rstrip("\n").split("|")  # ['', ' 03 ', ' [GPT-2](...) ', ' what ', ' cpu ', ' gpu ', '']
            cpu, gpu = rows[m.group(1)]
            cells[-3], cells[-2] = f" {cpu} ", f" {gpu} "
            lines[i] = "|".join(cells) + "\n"
    README.write_text("".join(lines))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("execute", help="re-execute notebooks in place and record their times")
    run.add_argument("notebooks", nargs="+")
    sub.add_parser("write", help="write the recorded times into the notebook headers and the README")
    args = parser.parse_args(argv)
    if args.command == "execute":
        execute(args.notebooks)
    else:
        write()


if __name__ == "__main__":
    main()
