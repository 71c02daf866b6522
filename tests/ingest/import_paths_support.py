"""Helpers comparing the streamed (Parquet) and materialised import paths store by store."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from microseg.config.models import ProjectSettings
from microseg.config.sources import SourceSpec
from microseg.ingest import pipeline
from microseg.ingest.pipeline import ImportResult
from microseg.privacy.crypto import KeyRing
from microseg.workspace import Workspace

NOW = datetime(2024, 6, 1, 12, 0, 0)
TIMEOUT_MIN = 30
KEYS = KeyRing(b"h" * 32, b"d" * 32, "test-keys")  # one ring: tokens comparable across stores


def settings() -> ProjectSettings:
    raw: dict[str, Any] = yaml.safe_load(
        files("microseg.config.templates").joinpath("microseg.yaml").read_text()
    )
    raw["sessions"] = {"timeout_minutes": TIMEOUT_MIN}
    return ProjectSettings.model_validate(raw)


@contextmanager
def workspaces(n: int) -> Iterator[list[Workspace]]:
    """``n`` empty in-memory workspaces."""
    opened = [Workspace.ephemeral(settings()) for _ in range(n)]
    try:
        yield opened
    finally:
        for ws in opened:
            ws.close()


def run(
    ws: Workspace,
    keys: KeyRing,
    path: Path,
    *,
    streamed: bool,
    monkeypatch: pytest.MonkeyPatch,
    source: str = "src",
    spec: SourceSpec | None = None,
    chunk_rows: int = pipeline.PARQUET_CHUNK_ROWS,
) -> ImportResult:
    """Import with the Parquet stream on or off (same key ring for comparable tokens)."""
    monkeypatch.setattr(pipeline, "STREAM_PARQUET", streamed)
    return pipeline.import_events(
        ws.store,
        ws.settings,
        keys,
        path,
        spec,
        source_name=source,
        now=NOW,
        chunk_rows=chunk_rows,
    )


def counts(r: ImportResult) -> tuple[Any, ...]:
    return (r.rows_read, r.inserted, r.duplicates, r.quarantined, r.reasons)


def snapshot(ws: Workspace) -> dict[str, list[tuple[Any, ...]]]:
    """Everything an import writes, in a stable order (no generated batch ids / clocks)."""
    s = ws.store
    return {
        "events": s.rows("SELECT * FROM events ORDER BY event_id"),
        "quarantine": s.rows(
            "SELECT source, row_number, reason, detail, record, status, quarantined_at"
            " FROM quarantine ORDER BY row_number, reason, q_id"
        ),
        "identities": s.rows("SELECT * FROM identities ORDER BY id_key"),
        "edges": s.rows("SELECT * FROM identity_edges ORDER BY ALL"),
        "profiles": s.rows("SELECT * FROM profiles ORDER BY profile_id"),
        "batches": s.rows(
            "SELECT kind, source, rows_read, inserted, duplicates, quarantined, started_at,"
            " mapping FROM import_batches ORDER BY started_at, rows_read, inserted"
        ),
        "audit": s.rows(
            "SELECT actor, action, target, details::JSON->>'inserted',"
            " details::JSON->>'quarantined' FROM audit_log ORDER BY logged_at"
        ),
    }


def write_parquet(path: Path, rows: list[dict[str, Any]], row_group_size: int = 1000) -> Path:
    """Rows -> Parquet (every value typed as in a real export: strings, doubles, times)."""
    names: list[str] = []
    for r in rows:
        names.extend(k for k in r if k not in names)
    table = pa.table({n: [r.get(n) for r in rows] for n in names})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    names: list[str] = []
    for r in rows:
        names.extend(k for k in r if k not in names)

    def cell(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, datetime):
            return v.isoformat(sep=" ")
        return str(v)

    lines = [",".join(names)] + [",".join(cell(r.get(n)) for n in names) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def reference_sessions(events: list[tuple[str, str, datetime]]) -> dict[str, str]:
    """event_id -> computed session id, by hand: per key in time order, a new session after a
    gap longer than the timeout, named 'ms-' + md5(key|start)[:16] (whole-second times)."""
    by_key: dict[str, list[tuple[datetime, str]]] = {}
    for event_id, key, ts in events:
        by_key.setdefault(key, []).append((ts, event_id))
    out: dict[str, str] = {}
    for key, items in by_key.items():
        items.sort()
        start: datetime | None = None
        last: datetime | None = None
        for ts, event_id in items:
            if last is None or ts - last > timedelta(minutes=TIMEOUT_MIN):
                start = ts
            last = ts
            assert start is not None
            digest = hashlib.md5(f"{key}|{start:%Y-%m-%d %H:%M:%S}".encode()).hexdigest()
            out[event_id] = "ms-" + digest[:16]
    return out
