# mauth: the two commands a newcomer needs are `make demo` and `make test`.
# Both run `make setup` first, which installs whatever is missing.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python

.PHONY: setup test unit integration demo bench clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests

unit: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

integration: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/integration

# The whole system in a namespace lab, with the dashboard; Ctrl-C removes it all.
# HEADLESS=1: no terminal UI, a report and a JSON summary; exit 0 only if the policy held.
demo: setup
	$(PY) -m lab.demo$(if $(filter-out 0 no false,$(HEADLESS)), --headless)

# Benchmarks (bench/): print tables, regenerate docs/benchmarks.json. Root, about 1 minute.
bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) *.egg-info build .pytest_cache
