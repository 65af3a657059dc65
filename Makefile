# Whisper Atlas: the two commands a newcomer needs are `make demo` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
SIZE ?= default

TEST_RUN ?= test-small

.PHONY: install install-dev demo corpus real-run serve test test-fast lint bench

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

## A small real run (every stage on real audio, corpus size small) for the tests that need a trained SAE.
real-run: install-dev
	$(BIN)/whisper-atlas demo --size small --corpus $(TEST_RUN) --run $(TEST_RUN) --no-serve

## Lint and type check, unit tests (tiny random Whisper), integration tests (real bundled Whisper on the
## default corpus and on the small real run, which must exist here: none of them may skip), browser tests.
test: install-dev lint corpus real-run
	WHISPER_ATLAS_TEST_RUN=$(TEST_RUN) WHISPER_ATLAS_REQUIRE_REAL_RUN=1 $(BIN)/pytest -q

test-fast: install-dev
	$(BIN)/pytest -q -m "not integration and not browser"

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install-dev
	$(BIN)/python benchmarks/run_all.py
