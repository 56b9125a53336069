# `make help` lists the targets. Everything runs from the uv workspace in .venv.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv on PATH, else the copy `make uv` bootstraps into .tools/, else pip's module.
UV = $(shell command -v uv 2>/dev/null || { test -x .tools/bin/uv && echo .tools/bin/uv; } || echo python3 -m uv)
RUN = $(UV) run --frozen
MYPY_PATHS = shared/src $(wildcard services/*/src) tests devtools $(wildcard bench/*.py) $(wildcard scripts/*.py)
PYTEST_ARGS ?=

.PHONY: help uv install promtool run test test-standalone test-cluster test-sentinel lint bench docs up down compose-test clean

help: ## list the targets
	@grep -hE '^[a-z][a-zA-Z_-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

uv: ## install uv (into .tools/, a venv of its own) when it is missing
	@command -v uv >/dev/null 2>&1 || test -x .tools/bin/uv || python3 -m uv --version >/dev/null 2>&1 || \
	{ echo "installing uv into .tools/"; python3 -m venv .tools && .tools/bin/pip install --quiet uv; } || \
	python3 -m pip install uv

install: uv ## install every package from uv.lock into .venv
	$(UV) sync --frozen

promtool: ## fetch promtool into .tools/bin (Debian's prometheus package, unpacked; no daemon)
	@bash scripts/fetch_promtool.sh

run: install ## start the whole stack (Redis, SQLite, services) on embedded defaults; Ctrl-C stops it
	$(RUN) python -m devtools.run

test: install promtool ## every test on a standalone Redis, then integration and e2e on a local Redis Cluster
	@status=0; \
	echo "+ pytest (standalone Redis)"; $(RUN) pytest $(PYTEST_ARGS) || status=$$?; \
	echo "+ pytest tests/integration tests/e2e --redis-mode=cluster -m 'not own_topology'"; \
	$(RUN) pytest tests/integration tests/e2e --redis-mode=cluster -m "not own_topology" $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$status

test-standalone: install promtool ## the whole suite on a standalone Redis only
	$(RUN) pytest $(PYTEST_ARGS)

test-cluster: install ## integration and e2e suites on a local Redis Cluster (6 nodes)
	$(RUN) pytest tests/integration tests/e2e --redis-mode=cluster $(PYTEST_ARGS)

test-sentinel: install ## integration and e2e suites on a local Sentinel set
	$(RUN) pytest tests/integration tests/e2e --redis-mode=sentinel $(PYTEST_ARGS)

lint: install ## ruff check, ruff format --check, mypy --strict, import-linter
	@status=0; \
	echo "+ ruff check"; $(RUN) ruff check . || status=1; \
	echo "+ ruff format --check"; $(RUN) ruff format --check . || status=1; \
	echo "+ mypy --strict"; $(RUN) mypy --strict $(MYPY_PATHS) || status=1; \
	echo "+ lint-imports"; $(RUN) lint-imports || status=1; \
	exit $$status

bench: install ## every benchmark in short mode, then bench/report.md and its chart (bench/report.png)
	$(RUN) python bench/report.py

docs: install ## regenerate docs/: events.schema.json and asyncapi.json
	$(RUN) python scripts/export_docs.py

up: ## docker compose: build and start the stack (nginx on HTTP_PORT, default 8000); needs SERVICE_TOKEN
	docker compose up -d --build --wait

down: ## docker compose: stop and remove the containers (volumes are kept)
	docker compose down

compose-test: install ## build the compose stack and prove it: flows, faults (brings up Docker and base images as needed)
	$(RUN) python -m devtools.compose_test

clean: ## remove .devstack/ (make run's data), caches and build output
	rm -rf .devstack .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist
	find . -path ./.venv -prune -o -path ./.tools -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf
