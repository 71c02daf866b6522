"""Storage: the embedded DuckDB store, schema migrations and SQL-tree helpers."""

from microseg.store.duckdb_store import Store, utcnow

__all__ = ["Store", "utcnow"]
