# Two commands set up everything: `make study` (the main job) and `make test`.
# Both create/reuse the virtual environment in .venv and install the project into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision are installed first and pinned: these releases are served from local disk on
# the CPU-only machines here, and PyPI's Linux wheels of the same versions carry CUDA for GPUs.
TORCH ?= torch==2.14.1 torchvision==0.29.1
# Offline MNIST beside the checkout, when present; a STUDY_DATA_DIR you give always wins.
# `make test` and a CPU `make study` read the 10k test split (../shared/data/mnist); a `make
# study` whose torch sees a CUDA GPU reads all of MNIST (../shared/data/mnist-full: 60k train /
# 10k val) when that folder exists. On 2 CPU cores the 60k split cost 7.5x the judge's training
# and gave no better digits in a 4-minute trial (benchmarks/RESULTS.md, "Full MNIST").
MNIST_10K := $(abspath $(wildcard ../shared/data/mnist))
MNIST_FULL := $(abspath $(wildcard ../shared/data/mnist-full))
STUDY_DATA_DIR ?= $(MNIST_10K)
export STUDY_DATA_DIR
# Asked only by `make study`, and only when STUDY_DATA_DIR was not given (one torch import).
GPU_DATA_DIR = $(if $(and $(MNIST_FULL),$(filter file,$(origin STUDY_DATA_DIR))),$(shell \
	$(PY) -c 'import torch; print("$(MNIST_FULL)" if torch.cuda.is_available() else "")'))

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
	$(if $(GPU_DATA_DIR),STUDY_DATA_DIR=$(GPU_DATA_DIR) )$(PY) study/run.py $(CLIP_ARGS) $(ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
