"""Physical clean-up after an erasure: engine-owned files and the database file itself.

* ``scrub_files`` rewrites the text files under ``<project>/.microseg/`` (file outbox, API
  spool segments, exports) without the lines mentioning the person. Files are rewritten in
  place (same inode), so a writer holding the file open in append mode — the collector's
  current spool segment — keeps appending to the live file. Files elsewhere in the project
  (user-provided source files) are only reported, never modified.
* ``compact_store`` copies the DuckDB database into a fresh file and swaps it in: DuckDB
  marks deleted rows free but leaves their bytes in the file, so without this the erased
  values would still be readable with a hex editor.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import duckdb

from microseg.store import Store

TEXT_SUFFIXES = frozenset({".jsonl", ".json", ".csv", ".txt", ".log", ".ndjson", ".tsv"})
ENGINE_DIR = ".microseg"
MAX_SCAN_BYTES = 512 * 1024 * 1024


def _line_pattern(needles: list[str]) -> re.Pattern[bytes] | None:
    long = sorted({n for n in needles if len(n) >= 3}, key=len, reverse=True)
    if not long:
        return None
    alternation = b"|".join(re.escape(n.encode()) for n in long)
    return re.compile(rb"(?i)(?<![A-Za-z0-9_])(?:" + alternation + rb")(?![A-Za-z0-9_])")


def _is_store_file(path: Path, store_path: Path | None) -> bool:
    if store_path is None:
        return False
    name = store_path.name
    return path.parent == store_path.parent and (
        path.name == name or path.name.startswith(name + ".")
    )


def scrub_files(
    root: Path,
    needles: list[str],
    *,
    store_path: Path | None = None,
    key_path: Path | None = None,
    skip_dirs: Sequence[Path] = (),
) -> tuple[dict[str, int], list[str]]:
    """Rewrite engine files without matching lines; returns ({file: lines removed},
    [project files outside .microseg/ that still mention the person])."""
    pattern = _line_pattern(needles)
    rewritten: dict[str, int] = {}
    outside: list[str] = []
    if pattern is None or not root.exists():
        return rewritten, outside
    root = root.resolve()
    engine = root / ENGINE_DIR
    skip = [Path(d).resolve() for d in skip_dirs]
    store_path = store_path.resolve() if store_path is not None else None
    key_path = key_path.resolve() if key_path is not None else None
    for path in sorted(p.resolve() for p in root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in TEXT_SUFFIXES:
            continue
        if _is_store_file(path, store_path) or (key_path is not None and path == key_path):
            continue
        if path.stat().st_size > MAX_SCAN_BYTES or any(d in path.parents for d in skip):
            continue
        inside = engine in path.parents
        if ".venv" in path.parts or ".git" in path.parts:
            continue
        data = path.read_bytes()
        if not pattern.search(data):
            continue
        rel = str(path.relative_to(root))
        if not inside:
            outside.append(rel)
            continue
        lines = data.splitlines(keepends=True)
        kept = [line for line in lines if not pattern.search(line)]
        _rewrite_in_place(path, b"".join(kept))
        rewritten[rel] = len(lines) - len(kept)
    return rewritten, outside


def _rewrite_in_place(path: Path, data: bytes) -> None:
    with path.open("r+b") as fh:
        fh.seek(0)
        fh.write(data)
        fh.truncate()
        fh.flush()
        os.fsync(fh.fileno())


def compact_store(store: Store) -> None:
    """Rewrite the store's database file so no freed block keeps erased bytes."""
    if store.path is None:
        return
    path = store.path
    fresh = path.with_name(path.name + ".compact")
    with store.lock:
        for leftover in (fresh, fresh.with_name(fresh.name + ".wal")):
            leftover.unlink(missing_ok=True)
        con = store.con
        config: dict[str, str | bool | int | float | list[str]] = {
            name: str(con.execute("SELECT current_setting(?)", [name]).fetchone()[0])  # type: ignore[index]
            for name in ("memory_limit", "threads")
        }
        con.execute("CHECKPOINT")
        db = str(con.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]
        con.execute("ATTACH ? AS ms_compact", [str(fresh)])
        try:
            con.execute('COPY FROM DATABASE "' + db.replace('"', '""') + '" TO ms_compact')
        finally:
            con.execute("DETACH ms_compact")
        con.close()
        os.replace(fresh, path)
        path.with_name(path.name + ".wal").unlink(missing_ok=True)
        store.con = duckdb.connect(str(path), config=config)
        store.con.execute("SET TimeZone = 'UTC'")
