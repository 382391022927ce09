"""Benchmarks, each run as ``python -m bench.NAME`` from the repository root; each ends with one
JSON line. docs/results.md lists what each measured and the command."""
