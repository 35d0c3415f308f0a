# The front door. `make help` lists the targets; CONFIG=configs/x.yaml selects another experiment.
SHELL := /bin/bash
CONFIG ?= configs/digits.yaml
ARGS ?=
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN := $(PY) -m pipelines
# The stage targets come from the one stage registry (pipelines/stages/__init__.py, standard library only):
# pairs of make-target:stage, e.g. clean-data:clean.
STAGE_PAIRS := $(shell $(PYTHON) -m pipelines.stages targets)
STAGE_TARGETS := $(foreach pair,$(STAGE_PAIRS),$(firstword $(subst :, ,$(pair))))
stage_of = $(lastword $(subst :, ,$(filter $(1):%,$(STAGE_PAIRS))))

.DEFAULT_GOAL := help
.PHONY: help setup init pipeline $(STAGE_TARGETS) ui server tune-worker test test-fast bench lint docs docs-serve clean

help: ## list the targets
	@grep -E '^[a-zA-Z_ -]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  %-22s %s\n", $$1, $$2}'
	@echo "stages (make <stage>; python -m pipelines <stage> --help lists every option):"
	@$(PYTHON) -m pipelines.stages help
	@echo "  CONFIG=$(CONFIG) (override: make train CONFIG=configs/x.yaml ARGS='--set train.epochs=3 --force')"

# pip byte-compiles what it installs one file at a time (92 s of CPU for the 17,000 modules); installing with
# --no-compile and then compiling them all with compileall on every core leaves the same .pyc files in less
# time. Like pip, it skips the few files that do not compile (test data of some packages).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -e '.[dev]'
	# aeon only for the sensor datasets inside its wheel (read as files, never imported): its pins (numba<0.64,
	# pandas<3.1) exclude ours, so it comes without its dependencies (see pipelines/data/signals.py)
	$(PY) -m pip install --quiet --no-compile --no-deps aeon==1.6.0
	@$(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install the pinned dependencies (quick when done)

init: setup ## propose configs/<name>.yaml for your data: make init DATA=data/raw/x [NAME=name] (then make pipeline)
	@test -n "$(DATA)" || { echo "usage: make init DATA=<image folder | table.csv | recordings folder> [NAME=name]" >&2; exit 2; }
	$(RUN) init "$(DATA)" $(if $(NAME),--name "$(NAME)") $(ARGS)

pipeline: setup ## every stage on $(CONFIG) as one MLflow parent run
	$(RUN) all --config $(CONFIG) $(ARGS)

$(STAGE_TARGETS): setup
	$(RUN) $(call stage_of,$@) --config $(CONFIG) $(ARGS)

tune-worker: setup ## join a running search (make tune, same CONFIG) from another shell or machine
	$(RUN) tune-worker --config $(CONFIG) $(ARGS)

UI_PORT ?= 5000
SERVER_HOST ?= 127.0.0.1
SERVER_PORT ?= 5000
BACKEND_STORE_URI ?=
SERVER_ALLOWED_HOSTS ?=
ui: setup ## MLflow UI over the project's store on http://127.0.0.1:$(UI_PORT), printing each experiment's runs link
	$(RUN) server --config $(CONFIG) --port $(UI_PORT) $(ARGS)

server: setup ## tracking server for many machines: SERVER_HOST, SERVER_PORT, BACKEND_STORE_URI (default: mlruns/)
	$(RUN) server --config $(CONFIG) --host $(SERVER_HOST) --port $(SERVER_PORT) \
		$(if $(BACKEND_STORE_URI),--backend $(BACKEND_STORE_URI)) \
		$(if $(SERVER_ALLOWED_HOSTS),--allowed-hosts $(SERVER_ALLOWED_HOSTS)) $(ARGS)

test: setup ## every test (what CI runs)
	$(PY) -m pytest $(ARGS)

# test-fast runs its test files in TEST_JOBS processes (pytest-xdist; one file's tests and module fixtures stay in
# one process): most tests hold one core each (Python and small models), so on 2 cores two processes finish the
# fast tests in 155 s instead of 285 s.
TEST_JOBS ?= 2

test-fast: setup ## the tests not marked slow, for the edit-run loop (under 3 minutes; TEST_JOBS processes)
	$(PY) -m pytest -m "not slow" -n $(TEST_JOBS) --dist loadfile $(ARGS)

bench: setup ## run bench/ and write bench/results.json
	$(PY) -m bench $(ARGS)

lint: setup ## ruff
	$(VENV)/bin/ruff check pipelines models deploy tests bench

docs: setup ## build the documentation site into site/ (mkdocs --strict; the reference pages come from the code)
	$(VENV)/bin/mkdocs build --strict --site-dir site

docs-serve: setup ## serve the documentation site on http://127.0.0.1:8000, rebuilding on every edit
	$(VENV)/bin/mkdocs serve

clean: ## remove generated outputs (never data/raw; mlruns/ only with MLRUNS=1)
	rm -rf data/interim data/processed deploy/bundles bench/.work .pytest_cache .ruff_cache
	@if [ "$(MLRUNS)" = 1 ]; then rm -rf mlruns/mlflow.db mlruns/artifacts && echo "removed the MLflow store"; \
	else echo "kept mlruns/ (make clean MLRUNS=1 removes it)"; fi
