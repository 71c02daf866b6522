"""Migration 5 (API keys, collector spool ledger) lives in ``microseg.store.schema``.

``ensure_schema`` stays as a cheap guard for stores opened without migrating (read paths).
"""

from __future__ import annotations

from microseg.store import Store
from microseg.store.schema import MIGRATIONS

API_MIGRATION = next(m for m in MIGRATIONS if m.version == 5)


def ensure_schema(store: Store) -> bool:
    """Apply pending migrations (incl. 5); True when migration 5 was applied now."""
    return API_MIGRATION.version in store.migrate()
