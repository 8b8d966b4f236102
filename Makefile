# leadcast: `make run` builds the environment and runs the main job; `make test` runs every check CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/leadcast demo-data --leads 20000 --opportunities 5000 --seed 7 --out demo-data

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m pytest tests/benchmarks -m bench -s -p no:cacheprovider

clean:
	rm -rf $(VENV) demo-data .pytest_cache .mypy_cache .ruff_cache
