# sharedzarr: everything runs in .venv, created on first use.
# Each target installs only what it needs; a stamp per (pyproject.toml, extras) pair
# re-installs when pyproject.toml changes.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUM := $(shell cksum < pyproject.toml | cut -d' ' -f1)
STAMP := $(VENV)/.installed-$(SUM)
# `make test` and `make lint` share one install: the test, benchmark and lint tools
DEV_EXTRAS := test,bench,dev

.PHONY: install demo test bench stress lint docs clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# $(STAMP)-core: the package alone (numpy, posix_ipc, msgpack); -dev: + DEV_EXTRAS; -docs: + docs
$(STAMP)-core: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e .
	find $(VENV) -maxdepth 1 -name '.installed-*' ! -name '.installed-$(SUM)-*' -delete
	touch $@

$(STAMP)-dev: $(STAMP)-core
	$(BIN)/python -m pip install -q -e '.[$(DEV_EXTRAS)]'
	touch $@

$(STAMP)-docs: $(STAMP)-core
	$(BIN)/python -m pip install -q -e '.[docs]'
	touch $@

install: $(STAMP)-dev

demo: $(STAMP)-core
	$(BIN)/python examples/producer_consumer.py

test: $(STAMP)-dev
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(STAMP)-dev
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.snapshot

stress: $(STAMP)-dev
	$(BIN)/python -m pytest -q -p no:cacheprovider -o faulthandler_timeout=3600 -m stress tests
	$(BIN)/python tests/stress_report.py

lint: $(STAMP)-dev
	$(BIN)/ruff check sharedzarr tests benchmarks examples
	$(BIN)/ruff format --check sharedzarr tests benchmarks examples
	$(BIN)/mypy --strict sharedzarr

docs: $(STAMP)-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

clean:
	-$(BIN)/sharedzarr gc 2>/dev/null || true
	rm -rf $(VENV) build dist site *.egg-info .pytest_cache .hypothesis .mypy_cache
