"""Benchmarks that print their numbers: ``python -m stnlab.bench data``."""
