"""Packaging and tooling are consistent: environment.yml and pyproject.toml agree, CI, kernels, lab settings."""

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from the PyPI names
CONDA_TO_PYPI = {"pytorch": "torch"}
NOT_DEPENDENCIES = {"python", "pip"}


def _split(requirement: str) -> tuple[str, str]:
    """'scikit-learn>=1.3' -> ('scikit-learn', '>=1.3'), with PEP 503 name normalisation."""
    m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*", requirement)
    assert m, f"cannot parse requirement {requirement!r}"
    name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
    return name, m.group(2).replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    """Dependencies and every extra; an extra naming the project itself (course_lib[colab]) is expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += [r for r in extra if not r.startswith(project["name"] + "[")]
    return dict(_split(r) for r in reqs)


def environment_requirements() -> dict[str, str]:
    deps, in_deps, in_pip = {}, False, False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        code = line.split("#", 1)[0].rstrip()
        if re.fullmatch(r"\w+:.*", code):  # a top-level key: name, channels, dependencies
            in_deps = code.startswith("dependencies:")
            continue
        if re.fullmatch(r"\s*- pip:\s*", code):
            in_pip = True
            continue
        m = re.fullmatch(r"(\s*)- (.+)", code)
        if not m or not in_deps or (in_pip and m.group(2).startswith("-e ")):
            continue
        name, spec = _split(m.group(2))
        name = CONDA_TO_PYPI.get(name, name)
        if name not in NOT_DEPENDENCIES:
            deps[name] = spec
    return deps


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    py, env = pyproject_requirements(), environment_requirements()
    assert set(py) == set(env), (
        f"only in pyproject.toml: {sorted(set(py) - set(env))}; "
        f"only in environment.yml: {sorted(set(env) - set(py))}"
    )
    differing = {n: (py[n], env[n]) for n in py if py[n] != env[n]}
    assert not differing, f"version bounds differ (pyproject, environment.yml): {differing}"


def test_environment_yml_installs_the_course_itself():
    text = (ROOT / "environment.yml").read_text()
    assert re.search(r"- pip:\s*\n(\s+- .*\n)*?\s+- -e \.", text), "environment.yml's pip section must install the course (-e .)"


def test_card_packages_are_direct_dependencies():
    card = {"torch", "transformers", "jupyterlab", "matplotlib", "ipywidgets", "nbval", "pillow"}
    assert card <= set(pyproject_requirements())


def test_dev_extra_includes_the_colab_extra():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "course_lib[colab]" in extras["dev"], "make test must install what the notebooks install on Colab"


def test_ci_runs_both_worlds_and_the_browser():
    run = (ROOT / ".ci" / "run").read_text()
    steps = [m.group(1) for m in re.finditer(r"^\s*make ([\w-]+)", run, flags=re.M)]
    assert steps == ["test", "test-pretrained", "browser-test"], steps


def test_notebooks_use_the_venvs_python3_kernel_and_make_lab_registers_none():
    import json

    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert json.loads(path.read_text())["metadata"]["kernelspec"]["name"] == "python3", path.name
    lab_recipe = re.search(r"^lab:.*?(?=^\S)", (ROOT / "Makefile").read_text(), flags=re.M | re.S).group(0)
    assert "ipykernel install" not in lab_recipe, "make lab must not register a kernel that no notebook uses"


def test_make_lab_installs_the_settings_where_jupyterlab_reads_them():
    import json

    from jupyterlab.commands import get_app_dir

    settings = json.loads((ROOT / "tools" / "jupyterlab" / "overrides.json").read_text())
    assert settings["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"  # no news pop-up
    assert settings["@jupyter-widgets/jupyterlab-manager:plugin"]["saveState"] is True  # widgets survive a save
    app_settings = Path(get_app_dir()) / "settings" / "overrides.json"  # JupyterLab's application settings
    makefile = (ROOT / "Makefile").read_text()
    target = re.search(r"^LAB_SETTINGS := \$\(VENV\)/(\S+)", makefile, flags=re.M).group(1)
    assert app_settings.as_posix().endswith(target)


def test_gpu_check_refuses_without_cuda(monkeypatch, capsys):
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "tools" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu_check, "run_tests", lambda: pytest.fail("ran tests without a GPU"))
    assert gpu_check.main([]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
