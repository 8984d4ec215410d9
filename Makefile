# Two commands set up everything: `make study` (the main job) and `make test`.
# Both create/reuse the virtual environment in .venv and install the project into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision are installed first and pinned: these releases are served from local disk on
# the CPU-only machines here, and PyPI's Linux wheels of the same versions carry CUDA for GPUs.
TORCH ?= torch==2.14.1 torchvision==0.29.1
# The offline MNIST test split beside the checkout is used when present (override freely).
STUDY_DATA_DIR ?= $(abspath $(wildcard ../shared/data/mnist))
export STUDY_DATA_DIR

.PHONY: install study test lint clean
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

study: install
	$(PY) study/run.py $(ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
