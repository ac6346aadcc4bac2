# Thin wrappers; everything real lives in the `mlops` CLI and pytest.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup demo kind-demo test lint crds clean

$(BIN)/mlops: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -c constraints/dev.txt
	touch $@

setup: $(BIN)/mlops
	$(BIN)/mlops dev binaries

demo: setup
	$(BIN)/mlops dev demo --down

kind-demo: $(BIN)/mlops
	MLOPS=$(BIN)/mlops examples/kind/run.sh

test: setup
	$(BIN)/mlops crds --check
	$(BIN)/ruff check operator tests
	$(BIN)/mypy
	$(BIN)/python -m pytest

crds: $(BIN)/mlops
	$(BIN)/mlops crds

clean:
	rm -rf $(VENV) .state
