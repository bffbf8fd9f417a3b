"""The first code cell of every notebook: install the course where it is missing (Colab), then
choose the device and say which world the notebook is in.

    python tools/install_cell.py           # rewrite that cell in every notebook (sources only)
    python tools/install_cell.py --check   # exit 1 and name the notebooks whose cell differs

One template, here. The repository URL and the release come from ``pyproject.toml``
(``[project.urls] Repository`` and ``version``; the tag is ``v`` + version), so a release
changes one line. Per notebook two things are filled in:

* the extras its imports need: ``course_lib[colab]`` where a notebook imports a package
  (``diffusers``) that only the ``colab`` extra installs, plain ``course_lib`` elsewhere;
* ``NEEDS``: the pretrained repositories it can use (below), which ``course_lib.env``
  looks for in the Hugging Face cache to decide the world.

``tests/test_notebooks_install_cell.py`` checks every notebook against this template.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
CLIP = "openai/clip-vit-large-patch14"

# The pretrained repositories each notebook can use (the others train all they show).
NEEDS = {
    "00_setup": ["gpt2", SD15],  # tells the reader which world the course's pretrained sections will be in
    "03_gpt2": ["gpt2"],
    "05_lora": ["gpt2"],
    "06_sampling": ["gpt2"],
    "07_autoencoders": [SD15],
    "11_stable_diffusion": [SD15, CLIP],
    "12_inpainting": [SD15],
}

TEMPLATE = '''\
# Setup, the same in every notebook (tools/install_cell.py writes it). Where the course is
# missing (a fresh Colab runtime) it is installed first, at the release these notebooks belong to.
import importlib.util, subprocess, sys
if any(importlib.util.find_spec(m) is None for m in {modules}):
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "{requirement}"], check=True)
import torch
from course_lib.device import get_device, seed_everything
from course_lib.env import decide_world
device = get_device()
NEEDS = {needs}  # pretrained weights this notebook can use
WORLD, why = decide_world(NEEDS)  # "pretrained" or "offline"; COURSE_LIB_WORLD=offline|pretrained forces it
seed_everything(0)
print(f"device: {{device}}")
print(f"world: {{why}}")'''


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirement_name(spec: str) -> str:
    """'diffusers>=0.30' -> 'diffusers' (PEP 503-normalised)."""
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9_.\-]+)", spec).group(1)).lower()


def notebook_imports(nb: dict) -> set[str]:
    """Top-level modules imported by a notebook's code cells (IPython magics and shell lines skipped)."""
    modules = set()
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        lines = "".join(cell["source"]).splitlines()
        tree = ast.parse("\n".join(ln for ln in lines if not ln.lstrip().startswith(("%", "!"))))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.add(node.module.split(".")[0])
    return modules


def distributions(modules: set[str]) -> dict[str, str]:
    """Third-party modules -> the distribution that installs them (stdlib and course_lib left out)."""
    owners = importlib.metadata.packages_distributions()
    out = {}
    for module in sorted(modules - set(sys.stdlib_module_names) - {"course_lib"}):
        if module not in owners:
            raise LookupError(f"no installed distribution provides the module {module!r}")
        out[module] = requirement_name(owners[module][0])
    return out


def extras_needed(nb: dict) -> list[str]:
    """``["colab"]`` when an import is installed only by the colab extra, else ``[]``."""
    meta = project()
    base = {requirement_name(r) for r in meta["dependencies"]}
    colab = {requirement_name(r) for r in meta["optional-dependencies"]["colab"]}
    needed = set(distributions(notebook_imports(nb)).values()) - base
    missing = needed - colab
    if missing:
        raise LookupError(f"imports need {sorted(missing)}, which neither the dependencies nor [colab] install")
    return ["colab"] if needed else []


def render(name: str, nb: dict) -> str:
    """The setup cell of notebook ``name`` (its file name without ``.ipynb``)."""
    meta = project()
    url = meta["urls"]["Repository"]
    extras = extras_needed(nb)
    modules = ["course_lib"] + sorted(m for m, dist in distributions(notebook_imports(nb)).items()
                                      if dist not in {requirement_name(r) for r in meta["dependencies"]})
    package = meta["name"] + (f"[{','.join(extras)}]" if extras else "")
    requirement = f"{package} @ git+{url}.git@v{meta['version']}"
    return TEMPLATE.format(modules=json.dumps(modules), requirement=requirement, needs=json.dumps(NEEDS.get(name, [])))


def first_code_cell(nb: dict) -> dict:
    return next(cell for cell in nb["cells"] if cell["cell_type"] == "code")


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    if argv and not check:
        print(__doc__, file=sys.stderr)
        return 2
    stale = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        cell, want = first_code_cell(nb), render(path.stem, nb)
        if "".join(cell["source"]) == want:
            continue
        stale.append(path.name)
        if not check:
            cell["source"] = want.splitlines(keepends=True)  # as nbformat stores it
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if check and stale:
        print("setup cell differs from tools/install_cell.py in: " + ", ".join(stale), file=sys.stderr)
        return 1
    print(("rewrote " if stale else "up to date: ") + (", ".join(stale) or "every notebook"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
