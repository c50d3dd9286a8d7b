# mimir-edge developer targets. `make help` lists them; .ci/run and the README use the same.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
CARGO ?= cargo
CRATE := native

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

.PHONY: dev
dev: $(BIN)/python ## Editable install (release build of the core) with test, bench and lint tools into .venv
	$(BIN)/pip install -q -e ".[test,bench,lint]"

.PHONY: build
build: $(BIN)/python ## Rebuild the core in place after editing native/ (maturin develop --release)
	$(BIN)/pip install -q "maturin>=1.7,<2"
	$(BIN)/maturin develop --release -q

.PHONY: wheel
wheel: $(BIN)/python ## Build a wheel into dist/
	$(BIN)/pip install -q "maturin>=1.7,<2"
	$(BIN)/maturin build --release --out dist

.PHONY: lint
lint: ## ruff, mypy --strict, stubtest of _native, generated configs up to date, cargo fmt --check, clippy -D warnings
	$(BIN)/ruff check python tests benchmarks servers
	$(BIN)/ruff format --check python tests benchmarks servers
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest mimir_edge._native --allowlist .stubtest-allowlist
	$(BIN)/python -m mimir_edge.envoy_helm --check
	$(BIN)/python servers/envoy/generate.py --check
	cd $(CRATE) && $(CARGO) fmt --check
	cd $(CRATE) && $(CARGO) clippy --all-targets -- -D warnings
	cd $(CRATE) && $(CARGO) clippy --all-targets --features python -- -D warnings

.PHONY: charts
charts: ## Regenerate what is rendered from envoy_config: the Envoy chart's bootstrap and servers/envoy/
	$(BIN)/python -m mimir_edge.envoy_helm
	$(BIN)/python servers/envoy/generate.py

.PHONY: fmt
fmt: ## Format Python and Rust
	$(BIN)/ruff format python tests benchmarks servers
	$(BIN)/ruff check --fix python tests benchmarks servers
	cd $(CRATE) && $(CARGO) fmt

.PHONY: test-rust
test-rust: ## cargo tests of the core (unit, corrupt-input tables, proptest)
	cd $(CRATE) && $(CARGO) test --release

.PHONY: test-python
test-python: ## pytest (corpus counts, reference decoder, malformed inputs, properties)
	$(BIN)/pytest -q

.PHONY: test
test: test-rust test-python ## All tests: cargo tests + pytest

.PHONY: bench
bench: ## Benchmarks with their same-run baselines; prints the ratios
	$(BIN)/pytest benchmarks -q -p no:randomly --benchmark-columns=min,median,mean,rounds

.PHONY: clean
clean: ## Remove build outputs and caches
	rm -rf dist build .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks tests/_generated
	cd $(CRATE) && $(CARGO) clean
