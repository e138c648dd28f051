PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install test test-slow bench lint clean

install:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'

# one pytest worker per core (at most 8): XLA compiles a test's programs on one core
test:
	$(BIN)/python -m pytest -q -n auto --maxprocesses 8

test-slow:
	$(BIN)/python -m pytest -q -m slow -n auto --maxprocesses 8

# every environment and algorithm on this device -> benchmarks/results/<platform>.{json,md}
bench:
	$(BIN)/python -m benchmarks.suite

lint:
	$(BIN)/ruff check jaxmcg envs experiments benchmarks tests

clean:
	rm -rf $(VENV) runs .pytest_cache
