"""Benchmarks: `make bench` runs them and merges their figures into bench/results.json."""
