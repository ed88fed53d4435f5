# bestiary: `make demo` and `make test` each do all the set-up they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_PORT ?= 8765
DEMO_OUT ?= demo_out
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test test-all bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	DEMO_PORT=$(DEMO_PORT) DEMO_OUT=$(DEMO_OUT) bash scripts/demo.sh

test: setup
	$(BIN)/python -m pytest -q -m "not slow"

test-all: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
