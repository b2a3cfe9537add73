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

# The image's Python dependencies, pinned with their hashes (Dockerfile: pip --require-hashes).
# uv resolves pyproject.toml's runtime dependencies for Linux, Python 3.11 (the image's); it is
# installed once into a cache folder. The pins already in the lock are kept unless
# LOCK_ARGS=--upgrade (or --upgrade-package NAME) says otherwise.
CACHE_HOME := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/rollout-controller
LOCK_VENV := $(CACHE_HOME)/lock-venv
UV_VERSION := 0.13.9
LOCK_ARGS ?=

.PHONY: lock
lock: ## Regenerate requirements.lock (runtime dependencies, hashed) from pyproject.toml
	test -x $(LOCK_VENV)/bin/uv || { $(PYTHON) -m venv $(LOCK_VENV) \
	  && $(LOCK_VENV)/bin/pip install --quiet 'uv==$(UV_VERSION)'; }
	$(LOCK_VENV)/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	  --python-platform linux --annotation-style line --custom-compile-command 'make lock' \
	  $(LOCK_ARGS) pyproject.toml -o requirements.lock

# helm (the chart's lint and template tests, tests/deploy/), built from its Go module once into
# a cache folder and reused; HELM=/path/to/helm in the environment takes precedence in tests.
HELM_VERSION := v4.3.2
HELM_BIN := $(CACHE_HOME)/helm-$(HELM_VERSION)/helm

.PHONY: helm
helm: ## Build helm into the cache folder (once; needs Go) for the chart's tests
	@test -x $(HELM_BIN) || { command -v go >/dev/null || { echo "building helm needs Go"; exit 1; }; \
	  echo "building helm $(HELM_VERSION) into $(dir $(HELM_BIN))"; \
	  GOBIN=$(dir $(HELM_BIN)) go install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION); }
	@$(HELM_BIN) version --short

.PHONY: k8s-example
k8s-example: helm ## Render deploy/kubernetes/worker.yaml from the chart's default values
	{ echo "# The chart's default rendering (make k8s-example), for clusters without helm: the worker"; \
	  echo "# with its settings, Kafka Secret, metrics Service and disruption budget. Edit the"; \
	  echo "# ConfigMap and the Secret, or render your own: helm template NAME deploy/helm/rollout-controller"; \
	  echo "# -f my-values.yaml (docs/deploy.md)."; \
	  $(HELM_BIN) template rollout deploy/helm/rollout-controller --namespace rollout; \
	} > deploy/kubernetes/worker.yaml

.PHONY: clean
clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache native/target controller/stream/_native*.so
