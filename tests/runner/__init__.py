"""A run: its limits, logs, progress, preflight, verify and daily budget."""
