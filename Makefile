# On a fresh machine, two commands (see README.md):
#   make pipeline   installs everything into .venv and runs the pipeline (offline default)
#   make test       installs everything into .venv and runs the linter and the tests
#   make bench      the speed benchmark at MovieLens-20M scale (about 12 minutes; not a test)
#   make bench-recommend  the recommend stage at MovieLens-20M scale (not a test)
#   make bench-ranking    an epoch with negatives per objective at MovieLens-20M scale
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Stage commands in dvc.yaml say `python`: it must be the project's interpreter.
export PATH := $(abspath $(BIN)):$(PATH)
# DVC's usage analytics would send traffic out; this project sends none.
export DVC_NO_ANALYTICS := 1

.PHONY: install pipeline test bench bench-recommend bench-ranking

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

pipeline: install
	dvc repro

test: install
	ruff check .
	python -m pytest

bench: install
	python -m benchmarks speed

bench-recommend: install
	python -m benchmarks recommend

bench-ranking: install
	python -m benchmarks ranking
