"""Reproducible performance measurements: ``python -m benchmarks`` (see README)."""
