"""The benchmarks behind docs/BENCHMARKS.md: ``make bench`` runs ``python -m benchmarks.bench``."""
