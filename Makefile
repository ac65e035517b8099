# Two commands do all set-up on a fresh machine with python3 and pip:
#   make demo   - create .venv, install keymux, run `keymux demo` (emulator, fake keys)
#   make test   - create .venv, install keymux with its test tools (and, with apt-get, the
#                 chromium and redis-server the tests drive), run ruff, mypy --strict, pytest
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test system-deps lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/keymux demo

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks

typecheck: $(VENV)/.installed
	$(BIN)/mypy --strict src/keymux

pytest: $(VENV)/.installed
	$(BIN)/python -m pytest -q -n auto

system-deps:
	./scripts/system-deps.sh

test: system-deps lint typecheck pytest

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/goodput.py
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/proxy.py
	$(BIN)/python benchmarks/multiproc.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
