# Two entry points for a newcomer: `make demo` and `make test` (CI runs `make test-all`). They
# create the virtual environment and install earshot into it first, so a fresh clone needs
# nothing else.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.earshot-installed
# The web page's format and lint checks (Prettier, ESLint): exact versions in package-lock.json.
NODE_STAMP := node_modules/.earshot-installed

.PHONY: install demo test test-all lint bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch==2.13.0 is pinned in pyproject.toml: a looser pin would pull GBs of CUDA wheels.
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

# `make demo AUDIO=~/Recordings` indexes your own folder; see scripts/demo.py for what it
# indexes without one.
demo: $(STAMP)
	$(BIN)/python scripts/demo.py $(if $(AUDIO),--audio "$(AUDIO)")

lint: $(STAMP) $(NODE_STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	node_modules/.bin/prettier --check 'src/earshot/serve/static/**/*.js' eslint.config.js
	node_modules/.bin/eslint src/earshot/serve/static eslint.config.js

# `make test`: the fast suite, every test not marked slow (a few minutes on 2 cores).
# `make test-all`: every test, the slow ones too (benchmark smoke runs, training runs, the fuzz
# harness, browser tests, real-data card figures); this is what CI (.ci/run) runs.
test: lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

test-all: lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_model.py
