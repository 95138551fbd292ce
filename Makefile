# Two entry points for a fresh machine:
#   make demo   create .venv, install HyperSORT, run the built-in demo into demo_out/
#   make test   create .venv, install HyperSORT with its test extras, run the test suite
#
# TORCH selects the PyTorch requirement installed first. The default lets pip pick the build
# for this machine (CUDA on a GPU machine); CPU-only machines and CI may pin a build, e.g.
#   make test TORCH="torch==2.13.0"
# A torch already installed in .venv that satisfies the requirement is kept.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch>=2.4.1
DEMO_OUT ?= demo_out
DEMO_ARGS ?=
PYTEST_ARGS ?=
BIN := $(VENV)/bin

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/hypersort demo --out $(DEMO_OUT) $(DEMO_ARGS)

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
