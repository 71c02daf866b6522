"""Migration 5: API keys and the spool commit ledger of the HTTP collector.

The integrator appends ``API_MIGRATION`` to ``microseg.store.schema.MIGRATIONS``; until then
:func:`ensure_schema` applies it (same version, same statements, recorded the same way), so
either path leaves the store identical and the migration never runs twice.
"""

from __future__ import annotations

from microseg.store import Store, utcnow
from microseg.store.schema import Migration

API_MIGRATION = Migration(
    5,
    "api keys, collector spool ledger",
    (
        """CREATE TABLE IF NOT EXISTS api_keys (
            key_id VARCHAR PRIMARY KEY,
            name VARCHAR,
            role VARCHAR NOT NULL,
            key_hash VARCHAR NOT NULL,
            rate_per_second DOUBLE,
            created_at TIMESTAMP NOT NULL,
            created_by VARCHAR,
            revoked_at TIMESTAMP
        )""",
        """CREATE TABLE IF NOT EXISTS spool_commits (
            segment VARCHAR PRIMARY KEY,
            batch_id VARCHAR,
            lines BIGINT NOT NULL,
            inserted BIGINT,
            duplicates BIGINT,
            quarantined BIGINT,
            committed_at TIMESTAMP NOT NULL
        )""",
    ),
)


def ensure_schema(store: Store) -> bool:
    """Apply migration 5 if the store does not have it yet; True when it was applied now."""
    with store.lock:
        done = store.scalar(
            "SELECT count(*) FROM schema_migrations WHERE version = ?", [API_MIGRATION.version]
        )
        if done:
            return False
        with store.transaction():
            for stmt in API_MIGRATION.statements:
                store.execute(stmt)
            store.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                [API_MIGRATION.version, API_MIGRATION.name, utcnow()],
            )
        return True
