# Generative models from the ground up: the two commands are `make lab` and `make test`.
#
# Everything lives in a local virtual environment (.venv). It is (re)built only
# when pyproject.toml changes, so running a command again is fast.
#
#   make lab               open the course in JupyterLab
#   make test              unit tests + every notebook, offline world (what is stored)
#   make test-pretrained   every notebook in the pretrained world, against a local hub of tiny models
#   make browser-test      JupyterLab in headless Chromium: Run All in 06, stored outputs of 03 and 09
#   make notebooks         re-execute notebooks in place (offline world): the only way outputs change
#   make gpu-check         every test and notebook on CUDA, times to benchmarks/results/gpu.json

PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
# torch is installed first so a fresh machine gets a known release: a CPU wheel
# where one is available locally, the default PyPI build (CUDA on Linux) elsewhere.
TORCH_SPEC ?= torch==2.13.0
NB ?= notebooks/*.ipynb
PYTEST_ARGS ?=
NBVAL := --nbval-lax --nbval-current-env --nbval-cell-timeout=900 --nbval-sanitize-with tests/nbval_sanitize.cfg
# JupyterLab reads overrides.json from its application settings folder inside the venv:
# no news pop-up, widget state saved with the notebook (see tools/jupyterlab/overrides.json)
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json

# notebooks and tests run offline, with the venv's python first on PATH
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: lab test unit notebooks notebook-times test-pretrained browser-test gpu-check benchmarks setup clean

setup: $(STAMP) $(LAB_SETTINGS)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

$(LAB_SETTINGS): tools/jupyterlab/overrides.json $(STAMP)
	@mkdir -p $(dir $@)
	cp $< $@

# Jupyter refuses to run as root (containers, Colab-like boxes) unless told to.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

# Notebooks run on the venv's own "python3" kernel. Earlier versions registered a second
# kernel, course-lib, that no notebook asks for: it is removed if present.
lab: $(STAMP) $(LAB_SETTINGS)
	@$(BIN)/jupyter kernelspec remove -y course-lib >/dev/null 2>&1 || true
	$(BIN)/jupyter lab --notebook-dir=notebooks $(ROOT_FLAG) $(LAB_ARGS)

# The offline world is forced where outputs are checked or stored, so a machine whose
# Hugging Face cache holds GPT-2 still reproduces the stored (offline) outputs.
test unit notebooks: export COURSE_LIB_WORLD := offline

test: $(STAMP)
	$(BIN)/python -m pytest tests notebooks $(NBVAL) $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

# Every notebook in the pretrained world: a temporary Hugging Face cache holds tiny random models
# under the real repo ids (tests/fixtures/make_local_hub.py), HF_HUB_OFFLINE=1, COURSE_LIB_WORLD unset,
# so each notebook finds its weights in the cache and takes its pretrained branch. Outputs not stored.
test-pretrained: $(STAMP)
	@hub=$$(mktemp -d); trap 'rm -rf "$$hub"' EXIT; \
	$(BIN)/python tests/fixtures/make_local_hub.py "$$hub/hub" && \
	env -u COURSE_LIB_WORLD HF_HOME="$$hub/home" HF_HUB_CACHE="$$hub/hub" \
		$(BIN)/python -m pytest $(NB) $(NBVAL) -p no:cacheprovider $(PYTEST_ARGS)

# JupyterLab (127.0.0.1, a token) driven by headless Chromium: the system's `chromium`
# (Debian package; .ci/run installs it), through Playwright. Screenshots: tests/browser/screenshots/.
browser-test: $(STAMP) $(LAB_SETTINGS)
	$(BIN)/python -m pytest tests/browser --browser -p no:cacheprovider $(PYTEST_ARGS)

# On a CUDA machine: every test, then every notebook in its GPU setting (world as the cache says),
# per-notebook wall time to benchmarks/results/gpu.json. Refuses to start without a CUDA device.
gpu-check: $(STAMP)
	env -u COURSE_LIB_WORLD $(BIN)/python tools/gpu_check.py

# Re-execute notebooks in place, top to bottom, each in a fresh kernel: the only way outputs get
# into the repository. `make notebooks NB=notebooks/03_gpt2.ipynb`. Each notebook's wall time (and
# the zoo models it trained) goes to benchmarks/results/notebook_times.json; `make notebook-times`
# then writes those measurements into every notebook header and the README.
notebooks: $(STAMP)
	$(BIN)/python tools/notebook_times.py execute $(NB)

notebook-times: $(STAMP)
	$(BIN)/python tools/notebook_times.py write

benchmarks: $(STAMP)
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
