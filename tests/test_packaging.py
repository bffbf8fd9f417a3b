"""The project's packaging is consistent: environment.yml and pyproject.toml agree."""

import re
import tomllib
from pathlib import Path

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
