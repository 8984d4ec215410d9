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

# CLIP weights cannot be downloaded on offline machines: `make study` runs with --no-clip (and
# says so) unless CLIP=on, or CLIP_CHECKPOINT=<local open_clip weights file> is given.
CLIP ?= off
CLIP_ARGS := $(if $(CLIP_CHECKPOINT),--clip-checkpoint $(CLIP_CHECKPOINT),$(if $(filter off,$(CLIP)),--no-clip,))

study: install
	$(PY) study/run.py $(CLIP_ARGS) $(ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
