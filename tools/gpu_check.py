"""The GPU record (make gpu-check): every test, then every notebook, on a CUDA device.

    python tools/gpu_check.py [--notebooks 03_gpt2 11_stable_diffusion ...] [--skip-tests]

Refuses to start (exit 2) when torch sees no CUDA device. Notebooks run top to bottom in a
fresh kernel each, on copies (the stored outputs are not touched), in their GPU setting:
each notebook picks sizes and dtypes from its device, and its world from the Hugging Face
cache and the hub (COURSE_LIB_WORLD is not set). Writes benchmarks/results/gpu.json:

    {"device": ..., "torch": ..., "tests": {"exit_code": 0, "seconds": ...},
     "notebooks": {"03_gpt2": {"seconds": 41.2, "ok": true, "world": "pretrained: ..."}, ...}}

The README's GPU column is filled from it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "gpu.json"


def cuda_device() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def run_tests() -> dict:
    start = time.perf_counter()
    code = subprocess.call([sys.executable, "-m", "pytest", "-q", "tests"], cwd=ROOT)
    return {"exit_code": code, "seconds": round(time.perf_counter() - start, 1)}


def run_notebook(path: Path, timeout: int = 1800) -> dict:
    """Execute a copy of the notebook; wall time, success, and the world its setup cell printed."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    start, error = time.perf_counter(), None
    with tempfile.TemporaryDirectory() as tmp:  # the notebook's working folder; the copy is never written back
        try:
            NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": tmp}}).execute()
        except CellExecutionError as exc:
            error = str(exc).strip().splitlines()[-1][:300]
    seconds = round(time.perf_counter() - start, 1)
    world = next((line for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
                  for line in out.get("text", "").splitlines() if line.startswith("world: ")), None)
    return {"seconds": seconds, "ok": error is None, "error": error, "world": world}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", nargs="*", help="notebook names (default: all)")
    parser.add_argument("--skip-tests", action="store_true")
    args = parser.parse_args(argv)
    device = cuda_device()
    if device is None:
        print("gpu-check needs a CUDA GPU, and torch sees none (torch.cuda.is_available() is False): "
              "nothing was run and benchmarks/results/gpu.json is unchanged.", file=sys.stderr)
        return 2
    import torch

    paths = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if args.notebooks:
        paths = [p for p in paths if p.stem in args.notebooks]
        unknown = sorted(set(args.notebooks) - {p.stem for p in paths})
        if unknown:
            parser.error(f"unknown notebooks {unknown}")
    os.environ.pop("COURSE_LIB_WORLD", None)
    result = {"device": device, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
              "tests": None if args.skip_tests else run_tests(), "notebooks": {}}
    for path in paths:
        print(f"== {path.name}", flush=True)
        result["notebooks"][path.stem] = run_notebook(path)
        print(f"   {result['notebooks'][path.stem]}", flush=True)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    failed = [name for name, r in result["notebooks"].items() if not r["ok"]]
    return 1 if failed or (result["tests"] and result["tests"]["exit_code"]) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
