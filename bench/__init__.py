"""Benchmarks: `python -m bench.suite` (issue 6) and `bench/audit_bench.py` (issue 4)."""
