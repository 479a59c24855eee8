# pcf-api developer entry points. Each target sets up what it needs itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080

.DEFAULT_GOAL := help
.PHONY: help run test test-fast lint format coverage-gate clean lock

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# Runtime dependencies only: what `make run` needs.
$(VENV)/.runtime: requirements/main.lock requirements/build.lock pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements/build.lock -r requirements/main.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# Everything the tests and linters need, on top of the runtime set.
$(VENV)/.dev: requirements/dev.lock $(VENV)/.runtime
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements/build.lock -r requirements/dev.lock
	touch $@

run: $(VENV)/.runtime ## run the service locally (development profile, http://127.0.0.1:8080)
	mkdir -p data
	PCF_ENVIRONMENT=$${PCF_ENVIRONMENT:-development} $(BIN)/pcf-api serve --port $(PORT)

lint: $(VENV)/.dev ## ruff (lint + format check) and mypy --strict on src/
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy

format: $(VENV)/.dev ## apply the formatter and safe lint fixes
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

test-fast: $(VENV)/.dev ## unit tests only
	$(BIN)/pytest tests/unit -q

test: lint $(VENV)/.dev ## the whole suite: lint, unit, integration, coverage gates
	rm -f .coverage .coverage.*
	$(BIN)/pytest --cov --cov-report= -q
	$(BIN)/coverage report
	$(BIN)/python scripts/coverage_gate.py

lock: ## re-resolve the lock files (needs uv)
	uv pip compile pyproject.toml --generate-hashes --python-version 3.11 -o requirements/main.lock
	uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -o requirements/dev.lock
	uv pip compile requirements/build.in --generate-hashes --python-version 3.11 -o requirements/build.lock

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov
