"""Benchmarks: `make bench` runs them all (bench/__main__.py); docs/benchmarks.md reads the figures."""
