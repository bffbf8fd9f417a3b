# Generative models from the ground up: the two commands are `make lab` and `make test`.
#
# Everything lives in a local virtual environment (.venv). It is (re)built only
# when pyproject.toml changes, so running a command again is fast.

PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
# torch is installed first so a fresh machine gets a known release: a CPU wheel
# where one is available locally, the default PyPI build (CUDA on Linux) elsewhere.
TORCH_SPEC ?= torch==2.13.0
NB ?= notebooks/*.ipynb
PYTEST_ARGS ?=

# notebooks and tests run offline, with the venv's python first on PATH
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: lab test unit notebooks benchmarks setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

# Jupyter refuses to run as root (containers, Colab-like boxes) unless told to.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: $(STAMP)
	$(BIN)/python -m ipykernel install --user --name course-lib --display-name "Python (course_lib)"
	$(BIN)/jupyter lab --notebook-dir=notebooks $(ROOT_FLAG) $(LAB_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env \
		--nbval-cell-timeout=900 --nbval-sanitize-with tests/nbval_sanitize.cfg $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

# Re-execute notebooks in place, top to bottom, each in a fresh kernel:
# the only way outputs get into the repository. `make notebooks NB=notebooks/03_gpt2.ipynb`
notebooks: $(STAMP)
	for nb in $(NB); do \
		echo "== $$nb"; start=$$(date +%s); \
		$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
			--ExecutePreprocessor.kernel_name=python3 --ExecutePreprocessor.timeout=900 "$$nb" || exit 1; \
		echo "== $$nb: $$(( $$(date +%s) - start )) s"; \
	done

benchmarks: $(STAMP)
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
