# Whisper Atlas: the two commands a newcomer needs are `make demo` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
SIZE ?= default

.PHONY: install install-dev demo corpus serve test test-fast lint bench

install:
	scripts/install.sh

install-dev:
	scripts/install.sh --dev

## Build the default atlas from nothing (corpus -> extract -> train -> analyze -> build) and serve it.
demo: install
	$(BIN)/whisper-atlas demo --size $(SIZE) --host $(HOST) --port $(PORT)

serve: install
	$(BIN)/whisper-atlas serve --host $(HOST) --port $(PORT)

## The default corpus (cached Debian packages make a rebuild take under a minute).
corpus: install
	$(BIN)/whisper-atlas corpus build --size $(SIZE)

## Unit tests (tiny random Whisper), integration tests (real bundled Whisper on the real corpus; those that
## need a trained run read data/runs/default after `make demo` and say so when it is missing), browser tests.
test: install-dev lint corpus
	$(BIN)/pytest -q

test-fast: install-dev
	$(BIN)/pytest -q -m "not integration and not browser"

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install-dev
	$(BIN)/python benchmarks/run_all.py
