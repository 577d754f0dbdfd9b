# Bourse — the front door. `make` (or `make help`) lists the targets.
# Needs only python3 (3.11+) and cargo; everything else is pinned in requirements-dev.txt
# and installed into .venv.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Shared, read-only market data (never copied into the repo).
DATA_DIR ?= ../shared/data
LOBSTER_DEMO := $(DATA_DIR)/lobster/LOBSTER_SampleFile_AAPL_2012-06-21_1.zip

# maturin, clippy and cargo all configure pyo3 for the same interpreter, so they share one
# build of it instead of rebuilding it for each other.
export PYO3_PYTHON := $(CURDIR)/$(BIN)/python
export VIRTUAL_ENV := $(CURDIR)/$(VENV)
export CARGO_TERM_COLOR ?= auto

RUST_SOURCES := Cargo.toml $(shell find rust -name '*.rs' -o -name Cargo.toml 2>/dev/null)

.PHONY: help venv build test lint fmt bench run demo-bench clean

help: ## Show this help
	@echo "Usage: make <target>"
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-11s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(VENV)/.installed ## Create .venv with the pinned Python dev tools

$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

build: $(VENV)/.built ## Build the Rust engine into .venv as controlplane._engine (release)

# Editable install: Python changes need no rebuild, Rust and packaging changes do.
$(VENV)/.built: $(VENV)/.installed $(RUST_SOURCES) pyproject.toml
	$(BIN)/maturin develop --release
	touch $@

test: build ops-tools ## Run the Rust tests and the Python tests
	cargo test --workspace --exclude bourse-python
	$(BIN)/pytest -q tests

lint: build ## Check formatting, clippy, ruff, mypy (strict) and the _engine stub
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest controlplane._engine

fmt: venv ## Format Rust and Python sources
	cargo fmt --all
	$(BIN)/ruff check --select I --fix .
	$(BIN)/ruff format .

bench: build ## Run the engine benchmarks (both workloads) and the criterion benches
	$(BIN)/bourse bench engine --workload exchange-core
	$(BIN)/bourse bench engine --workload liquibook
	cargo bench -p bourse-engine

run: build ## Start the exchange (`bourse serve`, bourse.toml) with the demo market; Ctrl-C stops
	$(BIN)/bourse serve

loadtest: build ## Locust, headless, against `make run` (started if not running); reports/ (LOADTEST_USERS, LOADTEST_DURATION)
	$(BIN)/python loadtests/run.py

ops-tools: ## Install Prometheus and headless Chromium from Debian if missing (ops/install.sh)
	ops/install.sh

.PHONY: ops ops-tools loadtest
ops: ops-tools ## Prometheus (installed if missing) with the Bourse consoles next to `make run`, :9090
	ops/run-prometheus.sh $(or $(OPS_TARGET),127.0.0.1:$${BOURSE_HTTP_PORT:-8080}) $(or $(OPS_LISTEN),127.0.0.1:9090)

demo-bench: build ## The engine demo: a benchmark and a replay of a day of NASDAQ order flow
	$(BIN)/bourse bench engine --workload exchange-core
	$(BIN)/bourse replay lobster $(LOBSTER_DEMO)

clean: ## Remove build output, the venv and caches
	cargo clean
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
	rm -f controlplane/_engine*.so
	find controlplane tests -name __pycache__ -type d -prune -exec rm -rf {} +
