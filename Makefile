# rollout-controller: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

# The install builds the compiled prediction lane (native/, Rust) when cargo is on the PATH.
$(STAMP): pyproject.toml native/Cargo.toml native/Cargo.lock native/src/lib.rs
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"' \
	  || { echo "rollout-controller needs Python 3.11 or newer (set PYTHON=python3.11)"; exit 1; }
	@command -v cargo >/dev/null || echo "note: no cargo on the PATH: the compiled prediction \
	lane is not built; the worker runs on the Python path (see docs/performance.md)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@$(BIN)/python -c 'from controller.stream import native; print("compiled prediction lane:", \
	  "built" if native.available() else "NOT built (the worker runs on the Python path)")'
	touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create .venv and install the project with its dev tools

.PHONY: test
test: $(STAMP) ## Run the whole test suite (starts a local Kafka broker when none is given)
	$(BIN)/pytest $(PYTEST_ARGS)

.PHONY: unit
unit: $(STAMP) ## Run the tests that need no broker
	$(BIN)/pytest -m 'not kafka' $(PYTEST_ARGS)

.PHONY: demo
demo: $(STAMP) ## Run the demo: a healthy rollout promoted, a bad one rolled back, on a real broker
	$(BIN)/rollout demo

.PHONY: lint
lint: $(STAMP) ## ruff and mypy (strict on schemas and controller/core)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy schemas controller/core

.PHONY: bench
bench: $(STAMP) ## Run the benchmarks under bench/ (not tests; they print figures)
	$(BIN)/python bench/detection.py
	$(BIN)/python bench/throughput.py

.PHONY: kafka-up
kafka-up: $(STAMP) ## Start the local single-node Kafka 4 broker (KRaft) on 127.0.0.1:9092
	$(BIN)/rollout dev-kafka start

.PHONY: kafka-down
kafka-down: $(STAMP) ## Stop the local broker
	$(BIN)/rollout dev-kafka stop

.PHONY: schemas
schemas: $(STAMP) ## Regenerate the committed JSON Schemas under schemas/json
	$(BIN)/rollout schemas export schemas/json

.PHONY: clean
clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache native/target controller/stream/_native*.so
