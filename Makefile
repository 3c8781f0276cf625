# Two entry points for a fresh machine (Python >= 3.10 with venv):
#   make run    set up .venv and run the default workflow (config/config.yaml) on all cores
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
SNAKEMAKE_ARGS ?=

.PHONY: setup run test lint clean

$(BIN)/spemd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

setup: $(BIN)/spemd

run: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES) $(SNAKEMAKE_ARGS)

test: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest -ra --durations=20 $(PYTEST_ARGS)

lint: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --lint

clean:
	rm -rf results logs .snakemake
