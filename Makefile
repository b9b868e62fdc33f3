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

# The main job: PPO-train dgnn-ppo at I = 6 (short) and compare every method on the same evaluation
# seeds -> results/quick/ (table1.md/json, fig3.png, fig4.png, training.png); resumes where it stopped.
run: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/rl-isac reproduce --profile quick --out results/quick

# The whole study (I = 4, 6, 8, >= 50 episodes x 100 blocks, long training) -> results/full/; resumable.
reproduce: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/rl-isac reproduce --profile full --out results/full

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -p no:cacheprovider tests

lint: $(STAMP)
	$(VENV)/bin/ruff check rl_isac tests

bench: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/rl-isac bench --json results/bench.json

clean:
	rm -rf $(VENV) build *.egg-info
