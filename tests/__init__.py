"""bulkpost's tests, laid out as the package is: ``tests/core``, ``tests/storage``, ... for each
layer, ``tests/e2e`` for whole loads, and ``tests/test_layers.py`` for the layers themselves.
The benchmarks are ``benchmarks/`` (``make bench``).
"""
