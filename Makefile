# Two entry points, both working from a fresh clone (see README):
#   make demo   set up .venv and open the dashboard on the built-in demo
#   make test   set up .venv (with test tools and Chromium) and run ruff + the whole test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test setup setup-dev chromium bench lint

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

setup: $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dashboard,umap]"

setup-dev: $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev,bench,text,ray]"

chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

demo: setup
	$(BIN)/streamlit run app.py

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup-dev chromium lint
	$(BIN)/python -m pytest

bench: setup-dev
	$(BIN)/python bench/bench_surface.py
	$(BIN)/python bench/bench_hessian.py
