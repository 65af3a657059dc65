# Whisper Atlas: the two commands a newcomer needs are `make demo` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
SIZE ?= default

.PHONY: install install-dev demo atlas serve test test-fast lint bench

install:
	scripts/install.sh

install-dev:
	scripts/install.sh --dev

## Build the default atlas from nothing (corpus -> extract -> train -> analyze -> build) and serve it.
demo: install
	$(BIN)/whisper-atlas demo --size $(SIZE) --host $(HOST) --port $(PORT)

serve: install
	$(BIN)/whisper-atlas serve --host $(HOST) --port $(PORT)

## Build (or reuse) the default atlas without serving it: the integration tests read it.
atlas: install
	$(BIN)/whisper-atlas demo --size $(SIZE) --no-serve

## The whole suite: unit tests (tiny random Whisper), integration (real bundled Whisper on the default
## atlas, built first if missing or stale), browser (Chromium).
test: install-dev lint atlas
	$(BIN)/pytest -q

test-fast: install-dev
	$(BIN)/pytest -q -m "not integration and not browser"

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install-dev
	$(BIN)/python benchmarks/run_all.py
