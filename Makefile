# Whisper Atlas: the two commands a newcomer needs are `make demo` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
SIZE ?= default

.PHONY: install install-dev demo serve test test-fast lint typecheck bench clean-run

install:
	scripts/install.sh

install-dev:
	scripts/install.sh --dev

## Build the default atlas from nothing (corpus -> extract -> train -> analyze -> build) and serve it.
demo: install
	$(BIN)/whisper-atlas demo --size $(SIZE) --host $(HOST) --port $(PORT)

serve: install
	$(BIN)/whisper-atlas serve --host $(HOST) --port $(PORT)

## The whole suite: unit tests (tiny random Whisper), integration (real bundled Whisper), browser (Chromium).
test: install-dev lint
	$(BIN)/pytest -q

test-fast: install-dev
	$(BIN)/pytest -q -m "not integration and not browser"

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install-dev
	$(BIN)/python benchmarks/run_all.py
