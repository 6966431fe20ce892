"""Reading the input: CSV, Parquet, Arrow and pandas data as a stream of row batches, every
value a faithful string, and the mapping file.

May import: ``bulkpost.core`` and ``bulkpost.errors``.
"""
