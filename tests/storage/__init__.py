"""The results file, the history, reports and the fix loop, on real files."""
