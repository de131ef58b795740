"""Benchmarks: speed is measured here and reported in docs/benchmarks.md, never in tests."""
