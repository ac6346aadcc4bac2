# Thin wrappers; everything real lives in the `mlops` CLI and pytest.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup system-demo system-test demo kind-demo test lint crds clean

# the Debian packages each command needs (installed when missing; quick when present)
system-demo system-test:
	$(PYTHON) operator/mlops_operator/dev/system.py $(@:system-%=%)

$(BIN)/mlops: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -c constraints/dev.txt
	touch $@

setup: $(BIN)/mlops
	$(BIN)/mlops dev binaries

demo: system-demo setup
	$(BIN)/mlops dev demo --down

kind-demo: $(BIN)/mlops
	MLOPS=$(BIN)/mlops examples/kind/run.sh

test: system-test setup
	$(BIN)/mlops crds --check
	$(BIN)/mlops manifests --check
	$(BIN)/ruff check operator tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pylint operator/mlops_operator
	$(BIN)/python -m pytest

crds: $(BIN)/mlops
	$(BIN)/mlops crds

clean:
	rm -rf $(VENV) .state
