"""Ingestion: readers, mapping, validation, quarantine, dedup, sessions and identities."""
