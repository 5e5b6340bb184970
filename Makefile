# Two entry points for a newcomer: `make demo` and `make test` (CI runs `make test-all`). They
# create the virtual environment and install earshot into it first, so a fresh clone needs
# nothing else.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.earshot-installed

.PHONY: install demo test test-all lint bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch==2.13.0 is pinned in pyproject.toml: a looser pin would pull GBs of CUDA wheels.
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# `make demo AUDIO=~/Recordings` indexes your own folder; see scripts/demo.py for what it
# indexes without one.
demo: $(STAMP)
	$(BIN)/python scripts/demo.py $(if $(AUDIO),--audio "$(AUDIO)")

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

# `make test`: the fast suite, every test not marked slow (a few minutes on 2 cores).
# `make test-all`: every test, the slow ones too (benchmark smoke runs, training runs, the fuzz
# harness, browser tests, real-data card figures); this is what CI (.ci/run) runs.
test: lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

test-all: lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_model.py
