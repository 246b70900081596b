"""Benchmark suites, run on demand with `python -m benchmarks.run` (never as timed unit tests)."""
