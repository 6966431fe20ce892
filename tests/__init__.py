"""bulkpost's tests; ``tests.bench`` holds the benchmarks (``make bench``)."""
