# Two commands on a fresh machine: `make train` and `make test`. Each builds the local virtual
# environment first when it is missing (CPU torch where there is no CUDA, faiss-cpu, the dev tools).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch where no NVIDIA driver is present; override e.g. TORCH_SPEC="torch==2.13.0
# --index-url https://download.pytorch.org/whl/cpu" on machines without a local CPU wheel.
HAS_CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
ifeq ($(HAS_CUDA),1)
TORCH_SPEC ?= torch
FAISS_EXTRA ?= gpu
else
TORCH_SPEC ?= torch==2.13.0
FAISS_EXTRA ?= cpu
endif
ARGS ?=

.PHONY: setup train test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[$(FAISS_EXTRA),dev]"
	touch $@

train: setup
	$(PY) scripts/train.py $(ARGS)

test: setup
	$(PY) -m pytest -q $(ARGS)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: setup
	$(PY) scripts/benchmark.py $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache
