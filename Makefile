# nash-pipeline: the two commands a newcomer needs are `make demo` and `make test`.
#
# torch: a CPU-only machine gets the CPU build, a machine with an NVIDIA driver (nvidia-smi) the
# CUDA build. Override with `make demo TORCH_VARIANT=cuda|cpu`. The CPU build comes from the
# PyTorch CPU index (or from a local wheel folder pip is configured with, as on our CI machine).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC := torch>=2.6,<2.14
TORCH_VARIANT ?= $(if $(shell command -v nvidia-smi 2>/dev/null),cuda,cpu)
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP := $(VENV)/.nash-installed
PYTEST_ARGS ?=

export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export MLFLOW_DISABLE_TELEMETRY ?= true
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: demo test lint ui install clean help

help:
	@echo "make demo   - install (first time) and run the offline demo sweep (configs/demo.yaml)"
	@echo "make test   - install (first time), lint (ruff check + format --check), run the tests"
	@echo "make lint   - ruff check and ruff format --check only"
	@echo "make ui     - open the MLflow UI on the demo's store (http://127.0.0.1:5000)"
	@echo "make clean  - remove the demo's workdir (.nash)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	@if ! $(BIN)/python -c "import torch" 2>/dev/null; then \
	  echo "installing torch ($(TORCH_VARIANT) build)"; \
	  if [ "$(TORCH_VARIANT)" = cpu ]; then \
	    $(BIN)/pip install -q --retries 0 --extra-index-url $(TORCH_CPU_INDEX) '$(TORCH_SPEC)'; \
	  else \
	    $(BIN)/pip install -q '$(TORCH_SPEC)'; \
	  fi; \
	fi
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/nash run configs/demo.yaml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

ui: $(STAMP)
	$(BIN)/nash ui

clean:
	rm -rf .nash
