"""Benchmarks of pcf-api against baselines (bench/README.md, results in docs/benchmarks.md).

A package, so that the scripts share their helpers by importing each other. Run them from the
repository root, as files (``python bench/paired.py``) or as modules (``python -m bench.paired``).
"""
