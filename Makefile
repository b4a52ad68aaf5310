# sharedzarr: everything runs in .venv, created on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install test demo bench stress lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test,bench,dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider

demo: install
	$(BIN)/python examples/producer_consumer.py

bench: install
	$(BIN)/python -m benchmarks.run

stress: install
	$(BIN)/python -m pytest -q -p no:cacheprovider -o faulthandler_timeout=3600 -m stress tests
	$(BIN)/python tests/stress_report.py

lint: install
	$(BIN)/ruff check sharedzarr tests benchmarks examples
	$(BIN)/ruff format --check sharedzarr tests benchmarks examples

clean:
	-$(BIN)/sharedzarr gc 2>/dev/null || true
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
