# `make run` = install + dvc repro + serve the champion; `make test` = the test suite.
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
BIN := $(VENV)/bin
# Stages run `python -m pipeline.…`: the venv's python must come first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install repro serve run ui test bench params clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-serve.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

params: install
	$(BIN)/python -m pipeline.params

repro: install
	$(BIN)/dvc repro

serve: install
	$(BIN)/python -m serve.check || exit 1
	HOST=$(HOST) PORT=$(PORT) $(BIN)/gunicorn -c serve/gunicorn.conf.py serve.gunicorn_app:app

run: repro serve

ui: install
	$(BIN)/mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///mlruns/mlflow.db} \
		--host $(HOST) --port $${UI_PORT:-5000}

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/train_speed.py

clean:
	rm -rf data models reports champion mlruns/mlflow.db mlruns/artifacts .dvc/cache
