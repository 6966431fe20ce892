"""The Python API: bulkpost.run() and its errors."""
