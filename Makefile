# The front door. `make help` lists the targets; CONFIG=configs/x.yaml selects another experiment.
SHELL := /bin/bash
CONFIG ?= configs/digits.yaml
ARGS ?=
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN := $(PY) -m pipelines
STAGES := analyze clean-data split train tune export evaluate

.DEFAULT_GOAL := help
.PHONY: help setup pipeline $(STAGES) gan sr denoise segment ui test test-all bench lint clean

help: ## list the targets
	@grep -E '^[a-zA-Z_ -]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  %-22s %s\n", $$1, $$2}'
	@echo "  CONFIG=$(CONFIG) (override: make train CONFIG=configs/x.yaml ARGS='--set train.epochs=3 --force')"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install the pinned dependencies (quick when done)

pipeline: setup ## every stage on $(CONFIG) as one MLflow parent run
	$(RUN) all --config $(CONFIG) $(ARGS)

analyze: setup ## profile the raw data (balance, ranges, duplicates, baseline)
	$(RUN) analyze --config $(CONFIG) $(ARGS)
clean-data: setup ## the clean stage: canonical images and drop rules, with a cleaning log
	$(RUN) clean --config $(CONFIG) $(ARGS)
split: setup ## stratified seeded split manifest; normalizer fitted on train
	$(RUN) split --config $(CONFIG) $(ARGS)
train: setup ## train the configured model and register it as champion
	$(RUN) train --config $(CONFIG) $(ARGS)
tune: setup ## random search on validation data; best model becomes champion
	$(RUN) tune --config $(CONFIG) $(ARGS)
export: setup ## TF-Lite variants validated on LiteRT, and the edge bundle
	$(RUN) export --config $(CONFIG) $(ARGS)
evaluate: setup ## the test split, exactly once (ARGS=--reuse-test to override, tagged)
	$(RUN) evaluate --config $(CONFIG) $(ARGS)
gan: setup ## DCGAN on the training split with a custom GradientTape loop
	$(RUN) gan --config $(CONFIG) $(ARGS)
sr: setup ## super-resolution x2 on scikit-image's photographs, PSNR/SSIM against bicubic
	$(RUN) sr --config $(CONFIG) $(ARGS)
denoise: setup ## denoising autoencoder on the training images; PSNR gain, 2-D latent plot
	$(RUN) denoise --config $(CONFIG) $(ARGS)
segment: setup ## U-Net against an encoder-decoder without skips on digits-on-canvas masks
	$(RUN) segment --config $(CONFIG) $(ARGS)

ui: setup ## MLflow UI over the project's store on http://127.0.0.1:5000
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db \
		--default-artifact-root $(CURDIR)/mlruns/artifacts --host 127.0.0.1 --port 5000

test: setup ## the fast tests
	$(PY) -m pytest -m "not slow" $(ARGS)

test-all: setup ## every test, slow ones too
	$(PY) -m pytest $(ARGS)

bench: setup ## run bench/ and write bench/results.json
	$(PY) -m bench $(ARGS)

lint: setup ## ruff
	$(VENV)/bin/ruff check pipelines models deploy tests bench

clean: ## remove generated outputs (never data/raw; mlruns/ only with MLRUNS=1)
	rm -rf data/interim data/processed deploy/bundles bench/.work .pytest_cache .ruff_cache
	@if [ "$(MLRUNS)" = 1 ]; then rm -rf mlruns/mlflow.db mlruns/artifacts && echo "removed the MLflow store"; \
	else echo "kept mlruns/ (make clean MLRUNS=1 removes it)"; fi
