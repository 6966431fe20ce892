# bulkpost: `make demo` runs the main job on the bundled sandbox, `make test` passes the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint unit bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "bulkpost needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	bash samples/demo.sh

lint: install
	$(BIN)/ruff check bulkpost tests benchmarks samples docs
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q -n 4

unit: install
	$(BIN)/python -m pytest -q -m "not e2e"

bench: install
	$(BIN)/python -m benchmarks.bench

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
