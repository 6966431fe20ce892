"""Reading inputs: CSV, Parquet, Arrow and pandas data, and their faithful strings."""
