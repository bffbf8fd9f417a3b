"""Every notebook starts with the one setup cell of tools/install_cell.py, and it installs what the notebook imports."""

import ast
import importlib.metadata
import importlib.util
import json
import re
import sys
import tomllib
from pathlib import Path

import pytest

from course_lib import hub

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

_spec = importlib.util.spec_from_file_location("install_cell", ROOT / "tools" / "install_cell.py")
install_cell = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(install_cell)


def _name(spec: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9_.\-]+)", spec).group(1)).lower()


def _cells(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    return nb, code[0], code[1:]


def _tree(source: str) -> ast.Module:
    return ast.parse("\n".join(ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))))


def test_every_notebook_is_checked():
    assert len(NOTEBOOKS) == 13


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_code_cell_is_the_template(path):
    nb, setup, _ = _cells(path)
    assert setup == install_cell.render(path.stem, nb), (
        f"{path.name}: the setup cell differs from tools/install_cell.py; run `python tools/install_cell.py`")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_install_cell_names_the_release_and_the_extras_the_imports_need(path):
    _, setup, rest = _cells(path)
    match = re.search(r'"(course_lib(?:\[([\w,]+)\])?) @ git\+(\S+)\.git@v([\w.]+)"', setup)
    assert match, f"{path.name}: no pip requirement 'course_lib[...] @ git+URL.git@vVERSION' in the setup cell"
    extras = match.group(2).split(",") if match.group(2) else []
    assert match.group(3) == PROJECT["urls"]["Repository"] and match.group(4) == PROJECT["version"]
    installed = {_name(r) for r in PROJECT["dependencies"]}
    for extra in extras:
        installed |= {_name(r) for r in PROJECT["optional-dependencies"][extra]}
    owners = importlib.metadata.packages_distributions()
    imported = set()
    for source in [setup, *rest]:
        for node in ast.walk(_tree(source)):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"course_lib"}
    needs = {m: _name(owners[m][0]) for m in third_party}
    missing = {m: d for m, d in needs.items() if d not in installed}
    assert not missing, f"{path.name} imports {missing}, which course_lib{extras or ''} does not install"
    # the cell installs when any of them is missing, not only course_lib
    checked = set(re.search(r"for m in (\[.*?\])\)", setup).group(1).strip("[]").replace('"', "").split(", "))
    beyond_base = {m for m, d in needs.items() if d not in {_name(r) for r in PROJECT["dependencies"]}}
    assert beyond_base | {"course_lib"} <= checked


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_needs_names_every_repo_the_notebook_loads(path):
    _, setup, rest = _cells(path)
    needs = json.loads(re.search(r"^NEEDS = (\[.*?\])", setup, flags=re.M).group(1))
    known = {"gpt2", "stable-diffusion-v1-5/stable-diffusion-v1-5", "stabilityai/stable-diffusion-2-1",
             "openai/clip-vit-large-patch14"}
    used = {node.value for source in rest for node in ast.walk(_tree(source))
            if isinstance(node, ast.Constant) and node.value in known}
    if re.search(r"load_stable_diffusion\(\s*SD15_REPO", "\n".join(rest)):
        used.add("stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert used <= set(needs), f"{path.name} loads {sorted(used - set(needs))} but NEEDS is {needs}"
    assert all(hub.repo_files(repo) for repo in needs), "every need must be a repo course_lib.hub knows the files of"
