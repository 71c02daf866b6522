"""Storage: the embedded DuckDB store, schema migrations and SQL-tree helpers."""

from microseg.store.duckdb_store import Store, naive_utc, utcnow

__all__ = ["Store", "naive_utc", "utcnow"]
