# On a fresh machine, two commands (see README.md):
#   make pipeline   installs everything into .venv and runs the pipeline (offline default)
#   make test       installs everything into .venv (and Chromium for the page's browser test)
#                   and runs the linters and every test
# and, for the edit-test loop and for measuring (docs/development.md, docs/benchmarks.md):
#   make test-fast  the unit tier: every test not marked slow
#   make bench      the training speed benchmark at MovieLens-20M scale (not a test)
#   make bench-recommend  the recommend stage at MovieLens-20M scale
#   make bench-ranking    an epoch with negatives per objective at MovieLens-20M scale
#   make bench-pipeline   the ranking configuration's whole pipeline at MovieLens-20M scale
#   make bench-ease       the evaluate stage's EASE baseline at MovieLens-20M scale
#   make bench-serve      the recommendation service under load at MovieLens-20M scale
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Stage commands in dvc.yaml say `python`: it must be the project's interpreter.
export PATH := $(abspath $(BIN)):$(PATH)
# DVC's usage analytics would send traffic out; this project sends none.
export DVC_NO_ANALYTICS := 1

.PHONY: install browser pipeline test test-fast bench bench-recommend bench-ranking bench-pipeline bench-ease bench-serve

# uv installs the project and its pinned dependencies: the same packages as pip, resolved and
# installed in seconds where pip takes about a minute (docs/development.md).
UV_VERSION := 0.13.9

# Bytecode: every process these targets start may write it (some machines set
# PYTHONDONTWRITEBYTECODE, and then each of the test suite's many processes would compile
# TensorFlow's modules from source again). The install compiles what the stages, DVC and the
# tests import, in two processes at once: about a third of the installed modules, in half the
# time of compiling all of them; the rest is compiled, once, if something imports it.
export PYTHONDONTWRITEBYTECODE :=
WARM_TF := import tensorflow, keras, h5py, numba, scipy.linalg, scipy.sparse
WARM_REST := import dvc.cli.parser, dvc.repo, dvc_task, celery, kombu, dvclive, pandas, \
	pyarrow.parquet, matplotlib.pyplot, fastapi, uvicorn, yaml, pytest, xdist, hypothesis, \
	selenium.webdriver, importlinter, vl_convert

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	$(BIN)/python -c "$(WARM_TF)" 2>/dev/null & $(BIN)/python -c "$(WARM_REST)" && wait $$!
	touch $@

install: $(STAMP)

# The service page's browser test drives Debian's Chromium through its chromedriver; installed
# once, as root or through sudo, when either is missing.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; }

pipeline: install
	dvc repro

# pytest-xdist workers. A test module runs whole on one worker (its tests share module fixtures
# and some run in order), in the order tests/conftest.py sorts them.
PYTEST := python -m pytest --dist loadscope --no-loadscope-reorder
# The whole suite gets one worker more than there are cores: its slow tests spend part of their
# time waiting on DVC's and TensorFlow's subprocesses, which an extra worker fills. The unit tier
# is pure computation, so one worker per core.
WORKERS := $(shell echo $$(( $$(nproc) + 1 )))

# The whole suite ends with its 20 slowest tests, the place to look when it grows.
test: install browser
	ruff check .
	$(PYTEST) -n $(WORKERS) --durations=20

test-fast: install
	$(PYTEST) -n auto -m "not slow"

bench: install
	python -m benchmarks speed

bench-recommend: install
	python -m benchmarks recommend

bench-ranking: install
	python -m benchmarks ranking

bench-pipeline: install
	python -m benchmarks pipeline

bench-ease: install
	python -m benchmarks ease

bench-serve: install
	python -m benchmarks serve
