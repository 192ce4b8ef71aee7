"""Benchmarks (run as `.venv/bin/python bench/bench_X.py`); shared set-up in bench/support.py."""
