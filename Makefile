# leadcast: `make run` builds the environment and runs the main job; `make test` runs every check CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench bench-quality clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The main job: a synthetic CRM, a tracked and promoted model, the leadership report, then the service with a
# fresh key and a curl that scores a lead (Ctrl-C stops it).
run: $(STAMP)
	$(BIN)/leadcast demo-data --leads 20000 --opportunities 5000 --seed 7 --out demo-data
	$(BIN)/leadcast train --data demo-data/leads.parquet
	$(BIN)/leadcast report --opportunities demo-data/opportunities.parquet --history demo-data/stage_history.parquet \
		--leads demo-data/leads.parquet --as-of 2026-07-01 --horizon 1Q --out reports/demo
	$(BIN)/leadcast serve --quickstart-key

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

# Every benchmark prints its figures; the session ends with one table of each target beside its floor or peer
# measured in the same run, as ratios (tests/benchmarks/conftest.py). Not in CI: it takes a while.
bench: $(STAMP)
	$(BIN)/python -m pytest tests/benchmarks -m bench -s -p no:cacheprovider

# Lead-model quality against default references on every export in ../shared/data (issue 14), a printed table.
bench-quality: $(STAMP)
	$(BIN)/python -m pytest tests/benchmarks/bench_quality.py -m bench -s -p no:cacheprovider

clean:
	rm -rf $(VENV) demo-data reports mlflow.db mlartifacts api-keys.json api-keys.json.lock leadcast.db leadcast.db-wal leadcast.db-shm leadcast.db.lock \
		.pytest_cache .mypy_cache .ruff_cache .hypothesis
	find models -mindepth 1 ! -name README.md -exec rm -rf {} +
