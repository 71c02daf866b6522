"""Execution engines besides the embedded DuckDB store (Spark SQL through PySpark)."""
