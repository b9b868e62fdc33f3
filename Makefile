# Set-up is part of every target: a fresh machine needs only python3 and make.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench reproduce clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch first (the pinned CPU build), then the package so pip sees torch satisfied.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The main job: a short simulation of the world with the baseline CU, then the exact classical
# reference and the DGNN + MILP method (committed reference checkpoint) on the same evaluation seeds.
run: $(STAMP)
	$(VENV)/bin/rl-isac simulate --targets 4 --blocks 100 --seed 0 --fidelity signal --json results/simulate.json
	$(VENV)/bin/rl-isac evaluate --method ekf-milp --targets 4 --episodes 2 --blocks 100 --fidelity signal --json results/run/ekf-milp-I4.json
	$(VENV)/bin/rl-isac evaluate --method dgnn-milp --checkpoint results/checkpoints/dgnn-I4 --targets 4 --episodes 2 --blocks 100 --fidelity signal --json results/run/dgnn-milp-I4.json

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -p no:cacheprovider tests

lint: $(STAMP)
	$(VENV)/bin/ruff check rl_isac tests

bench: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/rl-isac bench --json results/bench.json

clean:
	rm -rf $(VENV) build *.egg-info
