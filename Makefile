PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install test test-slow bench lint clean

install:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'

test:
	$(BIN)/python -m pytest -q

test-slow:
	$(BIN)/python -m pytest -q -m slow

bench:
	$(BIN)/python -m benchmarks.throughput --env escape_room
	$(BIN)/python -m benchmarks.lio_iteration
	$(BIN)/python -m benchmarks.throughput --env coins --n-envs 1024 4096
	$(BIN)/python -m benchmarks.mge_batch

lint:
	$(BIN)/ruff check jaxmcg envs experiments benchmarks tests

clean:
	rm -rf $(VENV) runs .pytest_cache
