"""Run compiled traits against the store: full batch rebuild, per-profile recompute, reads."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlglot import exp

from microseg.config.models import ProjectSettings
from microseg.config.yamlio import Document
from microseg.console import Progress, SilentProgress
from microseg.errors import NotFoundError
from microseg.store import Store, utcnow
from microseg.store import sql as q
from microseg.traits.compiler import SQL_TYPES, compile_traits
from microseg.traits.model import KIND_MODELS, TraitSet, load_traits, naive_utc

TRAITS_TABLE = "traits"
BUILD_TABLE = "_ms_traits_build"
TRAITS_FILE = "traits.yaml"


@dataclass
class TraitRunResult:
    """What one batch computation did."""

    rows: int
    columns: list[str]
    as_of: datetime
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)


def compute_traits(
    store: Store,
    settings: ProjectSettings,
    traitset: TraitSet,
    as_of: datetime | None = None,
    progress: Progress | None = None,
) -> TraitRunResult:
    """Recompute every trait for every live profile and swap in a new ``traits`` table.

    The new table is built under a scratch name, then ``traits`` is dropped and the scratch
    table renamed inside one transaction, so readers see either the old or the new table.
    ``trait_catalog`` gets one row per output column (kind, type, as_of, computed_at).
    """
    started = time.perf_counter()
    progress = progress or SilentProgress()
    as_of = naive_utc(as_of or utcnow())
    timings: dict[str, float] = {}
    progress.start("compute traits", total=3)
    try:
        store.ensure_columns("events", settings.taxonomy.property_columns())
        query = compile_traits(traitset, as_of)
        progress.update(note=f"compute {len(traitset)} traits")
        t0 = time.perf_counter()
        with store.lock:
            store.execute(f"DROP TABLE IF EXISTS {BUILD_TABLE}")
            store.execute(exp.Create(this=q.table(BUILD_TABLE), kind="TABLE", expression=query))
            timings["query"] = time.perf_counter() - t0
            progress.update(note="swap traits table")
            t0 = time.perf_counter()
            with store.transaction():
                store.execute(f"DROP TABLE IF EXISTS {TRAITS_TABLE}")
                store.execute(f"ALTER TABLE {BUILD_TABLE} RENAME TO {TRAITS_TABLE}")
                _write_catalog(store, traitset, as_of)
            timings["swap"] = time.perf_counter() - t0
        rows = int(store.scalar(f"SELECT count(*) FROM {TRAITS_TABLE}") or 0)
        progress.update(note=f"{rows:,} profiles")
    finally:
        progress.stop()
    columns = [c.name for c in traitset.columns()]
    return TraitRunResult(rows, columns, as_of, time.perf_counter() - started, timings)


def _write_catalog(store: Store, traitset: TraitSet, as_of: datetime) -> None:
    """Replace the catalog rows of computed traits; rows of other kinds (model scores) stay."""
    now = utcnow()
    kinds = [q.lit(k) for k in KIND_MODELS]
    store.execute(
        exp.delete(q.table("trait_catalog"), where=exp.In(this=q.col("kind"), expressions=kinds))
    )
    for c in traitset.columns():
        store.execute("DELETE FROM trait_catalog WHERE name = ?", [c.name])
        store.execute(
            "INSERT INTO trait_catalog VALUES (?, ?, ?, ?, ?, ?)",
            [c.name, c.kind, SQL_TYPES[c.dtype], c.description, now, as_of],
        )


def compute_traits_for(
    store: Store,
    settings: ProjectSettings,
    traitset: TraitSet,
    profile_ids: Iterable[str],
    as_of: datetime | None = None,
) -> list[dict[str, Any]]:
    """Trait values of the given profiles only (real-time path); nothing is written.

    Uses the same compiled query with a profile filter, so values equal the batch ones.
    """
    ids = sorted({str(p) for p in profile_ids})
    if not ids:
        return []
    store.ensure_columns("events", settings.taxonomy.property_columns())
    query = compile_traits(traitset, naive_utc(as_of or utcnow()), profile_ids=ids)
    with store.lock:
        cursor = store.execute(query)
        names = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    return [dict(zip(names, row, strict=True)) for row in rows]


def trait_frame(store: Store, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """The current traits table as a DataFrame (profile_id + trait columns)."""
    if not store.table_exists(TRAITS_TABLE):
        raise NotFoundError("no traits computed yet; run `microseg traits compute`")
    select = (
        exp.select(q.col("profile_id")).from_(q.table(TRAITS_TABLE)).order_by(q.col("profile_id"))
    )
    if columns is None:
        select = exp.select(exp.Star()).from_(q.table(TRAITS_TABLE)).order_by(q.col("profile_id"))
    else:
        have = store.columns(TRAITS_TABLE)
        for name in columns:
            if name not in have:
                from microseg.errors import did_you_mean

                raise NotFoundError(f"no trait column '{name}'{did_you_mean(name, have)}")
            select = select.select(q.col(name))
    return store.df(select)


def trait_catalog(store: Store) -> pd.DataFrame:
    """The trait catalog: name, kind, dtype (SQL type), description, computed_at, as_of."""
    return store.df("SELECT * FROM trait_catalog ORDER BY name")


def profile_traits(store: Store, profile_id: str) -> dict[str, Any]:
    """One profile's stored trait values."""
    if not store.table_exists(TRAITS_TABLE):
        raise NotFoundError("no traits computed yet; run `microseg traits compute`")
    select = (
        exp.select(exp.Star())
        .from_(q.table(TRAITS_TABLE))
        .where(exp.EQ(this=q.col("profile_id"), expression=exp.Placeholder()))
    )
    with store.lock:
        cursor = store.execute(select, [profile_id])
        names = [d[0] for d in cursor.description]
        row = cursor.fetchone()
    if row is None:
        raise NotFoundError(f"no traits for profile '{profile_id}'")
    return dict(zip(names, row, strict=True))


def validate_traits_file(doc: Document, project: Any) -> TraitSet:
    """The one-validator hook for ``traits.yaml`` (project: a config.project.Project)."""
    return load_traits(doc, project.settings.taxonomy)


def load_project_traits(root: Path, settings: ProjectSettings) -> TraitSet:
    """Load ``traits.yaml`` of a project folder (an empty set when the file is absent)."""
    path = root / TRAITS_FILE
    if not path.exists():
        return TraitSet([], settings.taxonomy.property_columns(), str(path))
    return load_traits(path, settings.taxonomy)
