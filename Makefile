# banana: the two commands of the README's quick start, and a few helpers.
#   make reproduce   the main job (builds the world, executes the notebooks into reports/)
#   make test        the full test suite (the same command CI runs)
# Each target creates .venv on first use. CPU installs pin torch==2.13.0 and install it
# *first*: otherwise peft/lightning/torchmetrics pull a multi-GB CUDA build. GPU users:
#   make install TORCH_SPEC=   after installing their own CUDA torch into .venv (see README).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PROFILE ?= cpu
SEED ?= 0
BIN := $(VENV)/bin

# No hub is reachable here; without these, datasets makes a request that fails.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: install test test-slow reproduce world bench

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"; fi
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest

test-slow: install
	$(BIN)/python -m pytest -m slow

reproduce: install
	$(BIN)/banana reproduce --profile $(PROFILE) --seed $(SEED)

world: install
	$(BIN)/banana world build --profile $(PROFILE) --seed $(SEED)

bench: install
	$(BIN)/python benchmarks/run_all.py --threads $(or $(THREADS),1) $(BENCH_ARGS)
