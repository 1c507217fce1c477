# make setup      - .venv/ with the toolkit installed (pip install -e ".[dev]")
# make pipeline   - the fourteen stages of studies A and C
# make check      - pyright (zero errors) and ruff over the package, models/ and the scripts
# make test       - the whole test suite; make test-fast: everything but the end-to-end runs (under a minute)
# make bench      - throughput beside ../shared/bench/peer_dataloader.py
# Settings: make pipeline DATA_DIR=../shared/data/cifar10-subset DEVICE=cpu SMOKE=1
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= data
DEVICE ?= auto
SMOKE ?=
FLAGS := --data-dir $(DATA_DIR) --device $(DEVICE) $(if $(SMOKE),--smoke)

.PHONY: setup pipeline check test test-fast bench clean-outputs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.txt requirements-dev.txt requirements-timm.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

pipeline: setup
	$(PY) run_pipeline.py $(FLAGS)

check: setup
	$(VENV)/bin/pyright
	$(VENV)/bin/ruff check .

test: setup
	$(PY) -m pytest --numprocesses=auto --maxprocesses=2 --dist loadfile --no-loadscope-reorder

test-fast: setup
	$(PY) -m pytest -m "not slow"

bench: setup
	$(PY) bench.py --data-dir $(DATA_DIR) --device $(DEVICE)

clean-outputs:
	rm -rf experiments failure_cases
