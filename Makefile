# mauth: the two commands a newcomer needs are `make demo` and `make test`.
# Both run `make setup` first, which installs whatever is missing.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python

.PHONY: setup check test unit loopback integration demo bench clean install uninstall man

setup:
	@bash scripts/setup.sh

# The gates (scripts/check.py), one line each: ruff, mypy, and the unit tests under branch
# coverage with its floor ([tool.ruff], [tool.mypy], [tool.coverage] in pyproject.toml).
check: setup
	$(PY) scripts/check.py

# The gates of `check` first, as the check tier (its coverage run is the unit tests' run); then
# two tiers (scripts/run_tests.py): the host tier on this kernel; the router tier (tests marked
# `router`, whose subject is multicast forwarding) here too when this kernel routes multicast,
# else in one boot of Debian's kernel under QEMU (python -m lab.vm).
test: setup
	$(PY) scripts/run_tests.py

# One tier at a time (tests/conftest.py): unit needs nothing (no socket, no process: it refuses
# them); loopback, sockets on 127.0.0.1 and ::1 and child processes; integration, root, XDP, namespaces.
# HYPOTHESIS_PROFILE=dev|ci|thorough picks how hard the property tests look (default dev).
unit: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

loopback: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/loopback

integration: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/integration

# The whole system in a namespace lab, with the dashboard; Ctrl-C removes it all.
# HEADLESS=1: no terminal UI, a report and a JSON summary; exit 0 only if the policy held.
# On a kernel that cannot route multicast the lab runs in Debian's kernel under QEMU (lab.vm).
demo: setup
	$(PY) -m lab.vm --if-needed -- $(PY) -m lab.demo$(if $(filter-out 0 no false,$(HEADLESS)), --headless)

# Benchmarks (bench/): print tables, regenerate docs/benchmarks.json and the tables of
# docs/benchmarks.md. Root, about 10 minutes; `python -m bench AREA` runs one area.
bench: setup
	$(PY) -m bench

# Install on this machine (scripts/install.sh says what goes where and why).
# DESTDIR stages the tree elsewhere; PREFIX defaults to /usr/local. Needs the
# Debian packages of `make setup` (clang and libbpf-dev to build, libbpf1, python3-venv).
PREFIX  ?= /usr/local
DESTDIR ?=

install:
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" bash scripts/install.sh install

uninstall:
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" bash scripts/install.sh uninstall

# Regenerate docs/man/*.1 from the command-line definitions.
man: setup
	$(PY) scripts/gen_manpages.py

clean:
	rm -rf $(VENV) .venv-vm *.egg-info build .pytest_cache
