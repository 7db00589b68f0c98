# Two entry points for a fresh machine; each installs what it needs into .venv.
#   make repro   the main job: the demo pipeline end to end, offline
#   make test    the test suite
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1

.PHONY: install repro test bench

$(BIN)/python:
	$(PY) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install -q --upgrade-strategy only-if-needed "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev]"

repro: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: install
	$(BIN)/ruff check amr stages tests bench
	$(BIN)/python -m pytest -q

# standalone benchmarks; bench/demo_learning.py reads the outputs of `make repro`;
# bench/learning_check.py and bench/span_fit.py (slow, need the real annotation files) and
# bench/repro_stages.py (a whole timed `dvc repro` in a clone) run alone
BENCHES := metrics_speed data_loading extract_speed mamba_scan train_step train_throughput demo_step grid_cost

bench: install
	$(BIN)/pip install -q -e ".[bench]"
	for b in $(BENCHES); do $(BIN)/python bench/$$b.py || exit 1; done
