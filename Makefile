# make pipeline   - the eleven stages of studies A and C (creates .venv first when missing)
# make test       - the test suite
# make bench      - throughput beside ../shared/bench/peer_dataloader.py
# Settings: make pipeline DATA_DIR=../shared/data/cifar10-subset DEVICE=cpu SMOKE=1
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= data
DEVICE ?= auto
SMOKE ?=
FLAGS := --data-dir $(DATA_DIR) --device $(DEVICE) $(if $(SMOKE),--smoke)

.PHONY: setup pipeline test bench clean-outputs

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# only the frost pictures of this package are used; its own pins (opencv-python) would clash with grad-cam's
	$(PY) -m pip install --quiet --no-deps imagecorruptions==1.1.2
	touch $@

pipeline: setup
	$(PY) run_pipeline.py $(FLAGS)

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) bench.py --data-dir $(DATA_DIR) --device $(DEVICE)

clean-outputs:
	rm -rf experiments failure_cases
