"""Batch membership: compute segments over the whole store, keep history, sizes and overlap."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
import pyarrow as pa
from sqlglot import exp

from microseg.config.models import ProjectSettings
from microseg.config.yamlio import Document
from microseg.console import Progress, SilentProgress
from microseg.errors import ConfigError, MicrosegError, NotFoundError, did_you_mean
from microseg.segments.ast import (
    EventCond,
    RecencyCond,
    Segment,
    SegmentRef,
    SequenceCond,
    event_columns,
    to_dict,
    walk,
)
from microseg.segments.catalog import Catalog, check_all, realtime_report
from microseg.segments.compiler import PID, compile_segment
from microseg.segments.realtime import MembershipChange
from microseg.segments.snapshot import segments_by_name
from microseg.store import Store, sql
from microseg.store.duckdb_store import utcnow

EVENTS_TEMP = "_segment_events"
NEW_TEMP = "_segment_new"
CUR_TEMP = "_segment_current"
IN_TEMP = "_segment_entered"
OUT_TEMP = "_segment_exited"
SMALL_POLICIES = ("warn", "refuse")


class SegmentTooSmall(MicrosegError):
    """A segment is below its minimum size and the policy is to refuse it."""


@dataclass
class SegmentRun:
    """The outcome of computing one segment."""

    name: str
    size: int
    entered: int
    exited: int
    status: str  # "ok" | "too_small_warned" | "too_small_refused"
    seconds: float
    warning: str | None = None


@dataclass
class ComputeReport:
    as_of: datetime
    runs: list[SegmentRun] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def warnings(self) -> list[str]:
        return [r.warning for r in self.runs if r.warning]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([r.__dict__ for r in self.runs])


def _checksum(seg: Segment) -> str:
    return hashlib.sha256(json.dumps(to_dict(seg), sort_keys=True).encode()).hexdigest()[:16]


def save_segment(
    store: Store,
    seg: Segment,
    segments: Mapping[str, Segment] | None = None,
    source_file: str | None = None,
) -> dict[str, Any]:
    """Store the definition (versioned by checksum); returns its real-time eligibility report."""
    report = realtime_report(seg, {**(segments or {}), seg.name: seg})
    now = utcnow()
    with store.transaction():
        store.execute(
            "INSERT INTO segments (name, definition, checksum, source_file, realtime, min_size,"
            " status, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'saved', ?) ON CONFLICT (name) DO UPDATE"
            " SET definition = excluded.definition, checksum = excluded.checksum,"
            " source_file = excluded.source_file, realtime = excluded.realtime,"
            " min_size = excluded.min_size, updated_at = excluded.updated_at",
            [
                seg.name,
                json.dumps(to_dict(seg)),
                _checksum(seg),
                source_file,
                json.dumps(report),
                seg.min_size,
                now,
            ],
        )
    return report


def saved_segments(store: Store) -> dict[str, Segment]:
    """Every saved definition, by name."""
    rows = store.rows("SELECT name, definition FROM segments ORDER BY name")
    return {str(n): Segment.model_validate(json.loads(d)) for n, d in rows}


def saved_segment(store: Store, name: str) -> Segment:
    found = saved_segments(store)
    if name not in found:
        raise NotFoundError(f"no segment '{name}'{did_you_mean(name, found)}; compute it first")
    return found[name]


def _lower_bound(segments: Iterable[Segment], as_of: datetime) -> datetime | None:
    """Earliest event time any condition can read, or None when all history is needed."""
    lows: list[datetime] = []
    for seg in segments:
        for _, node in walk(seg.rule):
            if isinstance(node, (EventCond, SequenceCond)):
                lower, _, _ = node.bounds(as_of)
                if lower is None:
                    return None
                lows.append(lower)
            elif isinstance(node, RecencyCond):
                return None
    return min(lows) if lows else as_of


def events_query(segments: Iterable[Segment], as_of: datetime, have: Iterable[str]) -> exp.Select:
    """The rows and columns of events the segments read, with their profile id.

    ``have`` is the set of event columns present; a column the segments name but the events
    table lacks yet (a declared property no import has carried) is NULL, so conditions on it
    are simply false. Shared by the DuckDB path and the Spark engine.
    """
    segs = list(segments)
    types, cols = event_columns(segs)
    present = set(have)
    select = exp.select(
        sql.col(PID, "i"),
        *(
            sql.col(c, "e") if c in present else exp.alias_(exp.Null(), c, quoted=True)
            for c in sorted(cols)
        ),
    )
    select = select.from_(
        exp.Table(this=sql.ident("events"), alias=exp.TableAlias(this=sql.ident("e")))
    ).join(
        exp.Table(this=sql.ident("identities"), alias=exp.TableAlias(this=sql.ident("i"))),
        on=exp.EQ(this=sql.col("id_key", "i"), expression=sql.col("id_key", "e")),
    )
    from microseg.segments.compiler import ts

    filters: list[exp.Expr] = [
        exp.In(
            this=sql.col("event_type", "e"),
            expressions=[sql.lit(t) for t in sorted(types)] or [sql.lit("")],
        ),
        exp.LTE(this=sql.col("ts", "e"), expression=ts(as_of)),
    ]
    lower = _lower_bound(segs, as_of)
    if lower is not None:
        filters.append(exp.GTE(this=sql.col("ts", "e"), expression=ts(lower)))
    return select.where(exp.and_(*filters))


def prepare_events(store: Store, segments: Iterable[Segment], as_of: datetime) -> None:
    """One pass over events: the rows and columns the segments read, with their profile id."""
    create = sql.create_temp(EVENTS_TEMP, events_query(segments, as_of, store.columns("events")))
    store.execute(create)


def compute_segments(
    target: Any,
    settings: ProjectSettings | None = None,
    segments: Mapping[str, Segment] | Iterable[Segment] | None = None,
    as_of: datetime | None = None,
    *,
    min_size: int | None = None,
    on_small: str = "warn",
    docs: Mapping[str, Document] | None = None,
    progress: Progress | None = None,
) -> ComputeReport:
    """Evaluate segments over the whole store at ``as_of`` and update memberships + history.

    ``target`` is a Workspace (its project's ``segments/*.yaml`` are used when ``segments`` is
    None) or a Store (then pass ``settings``). Segments below ``min_size`` (the segment's own
    ``min_size`` wins) are written with a warning, or left unchanged with ``on_small='refuse'``.
    """
    import time

    if on_small not in SMALL_POLICIES:
        raise ConfigError(f"on_small must be one of {SMALL_POLICIES}, got '{on_small}'")
    store, settings, segs, docs = _resolve(target, settings, segments, docs)
    progress = progress or getattr(target, "progress", None) or SilentProgress()
    as_of = as_of or utcnow()
    catalog = Catalog.from_store(store, settings)
    check_all(segs, catalog, docs)
    report = ComputeReport(as_of)
    started = time.perf_counter()
    with store.lock:
        prepare_events(store, segs.values(), as_of)
        progress.start("computing segments", len(segs))
        done: set[str] = set()  # computed in this run with memberships written
        try:
            for name in _dependency_order(segs):
                seg = segs[name]
                t0 = time.perf_counter()
                query = compile_segment(
                    seg,
                    as_of,
                    catalog=catalog,
                    segments=segs,
                    events_source=EVENTS_TEMP,
                    computed=frozenset(done),
                )
                run = _apply(
                    store,
                    seg,
                    query,
                    as_of,
                    min_size,
                    on_small,
                    segs,
                    docs[name].file if docs and name in docs else None,
                )
                run.seconds = time.perf_counter() - t0
                report.runs.append(run)
                if run.status != "too_small_refused":
                    done.add(name)
                progress.update(1, note=name)
        finally:
            progress.stop()
            store.execute(f"DROP TABLE IF EXISTS {EVENTS_TEMP}")
            for temp in (NEW_TEMP, CUR_TEMP, IN_TEMP, OUT_TEMP):
                store.execute(f"DROP TABLE IF EXISTS {temp}")
    report.seconds = time.perf_counter() - started
    return report


def save_memberships(
    store: Store,
    segments: Mapping[str, Segment] | Iterable[Segment],
    members: pd.DataFrame,
    as_of: datetime,
    *,
    min_size: int | None = None,
    on_small: str = "warn",
) -> ComputeReport:
    """Write memberships computed elsewhere (e.g. on Spark) exactly as ``compute_segments``
    would: entered/exited rows in the history, the min-size guard, segment size and status.

    ``members`` has columns ``segment`` and ``profile_id``; every segment in ``segments``
    is written (one without rows has no members). Profile ids the store does not know are
    refused (a run over another store's data)."""
    import time

    if on_small not in SMALL_POLICIES:
        raise ConfigError(f"on_small must be one of {SMALL_POLICIES}, got '{on_small}'")
    missing = {"segment", "profile_id"} - set(members.columns)
    if missing:
        raise ConfigError(f"memberships lack the columns {sorted(missing)}")
    segs = segments_by_name(segments)
    unknown = sorted(set(members["segment"]) - set(segs))
    if unknown:
        raise ConfigError(f"memberships name segments that are not defined: {unknown[:5]}")
    report = ComputeReport(as_of)
    started = time.perf_counter()
    frame = members[["segment", "profile_id"]].drop_duplicates().astype(object)
    with store.lock:
        store.con.execute("SELECT 1").fetchall()  # DuckDB refuses register() with a pending result
        store.con.register("_ms_saved_members", frame)
        try:
            strangers = store.scalar(
                "SELECT count(*) FROM _ms_saved_members m"
                " ANTI JOIN profiles p ON p.profile_id = m.profile_id"
            )
            if strangers:
                raise ConfigError(
                    f"{strangers} member profile ids are not in this store's profiles"
                )
            for name in _dependency_order(segs):
                t0 = time.perf_counter()
                store.execute(
                    f"CREATE OR REPLACE TEMP TABLE {NEW_TEMP} AS SELECT DISTINCT profile_id"
                    " FROM _ms_saved_members WHERE segment = ?",
                    [name],
                )
                run = _apply_new(store, segs[name], as_of, min_size, on_small, segs, None)
                run.seconds = time.perf_counter() - t0
                report.runs.append(run)
        finally:
            store.con.execute("SELECT 1").fetchall()
            store.con.unregister("_ms_saved_members")
            for temp in (NEW_TEMP, CUR_TEMP, IN_TEMP, OUT_TEMP):
                store.execute(f"DROP TABLE IF EXISTS {temp}")
    report.seconds = time.perf_counter() - started
    return report


def _dependency_order(segs: Mapping[str, Segment]) -> list[str]:
    """Names with referenced segments first (cycles were refused before), else by name."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in segs:
            return
        seen.add(name)
        for _, node in walk(segs[name].rule):
            if isinstance(node, SegmentRef):
                visit(node.segment)
        order.append(name)

    for name in sorted(segs):
        visit(name)
    return order


def _resolve(
    target: Any,
    settings: ProjectSettings | None,
    segments: Mapping[str, Segment] | Iterable[Segment] | None,
    docs: Mapping[str, Document] | None,
) -> tuple[Store, ProjectSettings | None, dict[str, Segment], Mapping[str, Document] | None]:
    if isinstance(target, Store):
        store = target
    else:
        store = target.store
        settings = settings or target.settings
    if segments is None:
        project = getattr(target, "project", None)
        if project is None:
            raise ConfigError("pass the segments to compute (no project to read them from)")
        from microseg.segments.parse import load_segments, project_segment_files

        segs, docs = load_segments(project_segment_files(project.root))
    else:
        segs = segments_by_name(segments)
    return store, settings, segs, docs


def _apply(
    store: Store,
    seg: Segment,
    query: exp.Select,
    as_of: datetime,
    min_size: int | None,
    on_small: str,
    segs: Mapping[str, Segment],
    source_file: str | None,
) -> SegmentRun:
    create = sql.create_temp(NEW_TEMP, query)
    store.execute(create)
    return _apply_new(store, seg, as_of, min_size, on_small, segs, source_file)


def _apply_new(
    store: Store,
    seg: Segment,
    as_of: datetime,
    min_size: int | None,
    on_small: str,
    segs: Mapping[str, Segment],
    source_file: str | None,
) -> SegmentRun:
    """Diff the members in the NEW_TEMP table against ``memberships`` and record the run."""
    size = int(store.scalar(f"SELECT count(*) FROM {NEW_TEMP}") or 0)
    limit = seg.min_size if seg.min_size is not None else (min_size or 0)
    warning = None
    status = "ok"
    if size < limit:
        warning = f"segment '{seg.name}' has {size} profiles, below the minimum of {limit}"
        status = "too_small_refused" if on_small == "refuse" else "too_small_warned"
    save_segment(store, seg, segs, source_file)
    if status == "too_small_refused":
        store.execute(
            "UPDATE segments SET status = ?, computed_at = ? WHERE name = ?",
            [status, utcnow(), seg.name],
        )
        return SegmentRun(seg.name, size, 0, 0, status, 0.0, warning)
    now = utcnow()
    stamp = as_of.isoformat(sep=" ")
    with store.transaction():
        store.execute(
            f"CREATE OR REPLACE TEMP TABLE {CUR_TEMP} AS SELECT profile_id FROM memberships"
            " WHERE segment = ?",
            [seg.name],
        )
        store.execute(
            f"CREATE OR REPLACE TEMP TABLE {IN_TEMP} AS SELECT profile_id FROM {NEW_TEMP}"
            f" ANTI JOIN {CUR_TEMP} USING (profile_id)"
        )
        store.execute(
            f"CREATE OR REPLACE TEMP TABLE {OUT_TEMP} AS SELECT profile_id FROM {CUR_TEMP}"
            f" ANTI JOIN {NEW_TEMP} USING (profile_id)"
        )
        entered = int(store.scalar(f"SELECT count(*) FROM {IN_TEMP}") or 0)
        exited = int(store.scalar(f"SELECT count(*) FROM {OUT_TEMP}") or 0)
        if entered:
            store.execute(
                "INSERT INTO membership_history SELECT ?, profile_id, 'entered', ?, ?, 'batch', ?"
                f" FROM {IN_TEMP}",
                [seg.name, as_of, f"batch as_of {stamp}: matches the rule", now],
            )
            store.execute(
                f"INSERT INTO memberships SELECT ?, profile_id, ? FROM {IN_TEMP}",
                [seg.name, as_of],
            )
        if exited:
            store.execute(
                "INSERT INTO membership_history SELECT ?, profile_id, 'exited', ?, ?, 'batch', ?"
                f" FROM {OUT_TEMP}",
                [seg.name, as_of, f"batch as_of {stamp}: no longer matches the rule", now],
            )
            store.execute(
                "DELETE FROM memberships WHERE segment = ? AND profile_id IN"
                f" (SELECT profile_id FROM {OUT_TEMP})",
                [seg.name],
            )
        store.execute(
            "UPDATE segments SET status = ?, size = ?, as_of = ?, computed_at = ? WHERE name = ?",
            [status, size, as_of, now, seg.name],
        )
    return SegmentRun(seg.name, size, entered, exited, status, 0.0, warning)


def apply_changes(store: Store, changes: Iterable[MembershipChange]) -> int:
    """Persist real-time membership changes (memberships + history); returns how many.

    Set-based: three statements per call whatever the number of changes (the real-time path
    calls this once per committed batch, with thousands of changes at high event rates)."""
    rows = list(changes)
    if not rows:
        return 0
    # Arrow, not pandas: DuckDB scans an Arrow table natively, while a pandas frame of Python
    # strings is read holding the GIL (the real-time path's request threads need it)
    frame = pa.table(
        {
            "seq": pa.array(range(len(rows)), pa.int64()),
            "segment": pa.array([c.segment for c in rows], pa.string()),
            "profile_id": pa.array([c.profile_id for c in rows], pa.string()),
            "change": pa.array([c.change for c in rows], pa.string()),
            "changed_at": pa.array([c.at for c in rows], pa.timestamp("us")),
            "reason": pa.array([c.reason for c in rows], pa.string()),
            "source": pa.array([c.source for c in rows], pa.string()),
            "recorded_at": pa.array([utcnow()] * len(rows), pa.timestamp("us")),
        }
    )
    with store.transaction():  # holds the store lock for the registered frame too
        store.con.register("_ms_changes", frame)
        try:
            store.execute(
                "INSERT INTO membership_history (segment, profile_id, change, changed_at, reason,"
                " source, recorded_at) SELECT segment, profile_id, change, changed_at, reason,"
                " source, recorded_at FROM _ms_changes ORDER BY seq"
            )
            store.execute(
                "DELETE FROM memberships WHERE (segment, profile_id) IN"
                " (SELECT DISTINCT segment, profile_id FROM _ms_changes)"
            )
            store.execute(
                "INSERT INTO memberships (segment, profile_id, entered_at)"
                " SELECT segment, profile_id, changed_at FROM _ms_changes"
                " QUALIFY ROW_NUMBER() OVER (PARTITION BY segment, profile_id ORDER BY seq DESC) = 1"
                " AND change = 'entered'"
            )
        finally:
            store.con.unregister("_ms_changes")
    return len(rows)


# --------------------------------------------------------------------------- reading
def members(store: Store, segment: str) -> set[str]:
    return {
        str(r[0])
        for r in store.rows("SELECT profile_id FROM memberships WHERE segment = ?", [segment])
    }


def sizes(store: Store) -> pd.DataFrame:
    """Every saved segment with its current size, status and last computation."""
    return store.df(
        "SELECT s.name AS segment, coalesce(m.n, 0) AS size, s.status, s.min_size, s.as_of,"
        " s.computed_at FROM segments s LEFT JOIN (SELECT segment, count(*) AS n FROM memberships"
        " GROUP BY segment) m ON m.segment = s.name ORDER BY s.name"
    )


def overlap(store: Store, names: Iterable[str] | None = None) -> pd.DataFrame:
    """Pairwise overlap: both counts and Jaccard index for every pair of segments."""
    wanted = sorted(set(names)) if names is not None else None
    df = store.df(
        "WITH m AS (SELECT * FROM memberships WHERE ? IS NULL OR list_contains(?, segment)),"
        " s AS (SELECT segment, count(*) AS n FROM m GROUP BY segment),"
        " pairs AS (SELECT a.segment AS segment_a, b.segment AS segment_b, count(*) AS both_n"
        " FROM m a JOIN m b ON a.profile_id = b.profile_id AND a.segment < b.segment GROUP BY 1, 2)"
        " SELECT sa.segment AS segment_a, sb.segment AS segment_b, sa.n AS size_a, sb.n AS size_b,"
        " coalesce(p.both_n, 0) AS both,"
        " coalesce(p.both_n, 0) / (sa.n + sb.n - coalesce(p.both_n, 0)) AS jaccard"
        " FROM s sa JOIN s sb ON sa.segment < sb.segment"
        " LEFT JOIN pairs p ON p.segment_a = sa.segment AND p.segment_b = sb.segment"
        " ORDER BY 1, 2",
        [wanted, wanted],
    )
    return df


def history(
    store: Store, segment: str, profile_id: str | None = None, limit: int = 1000
) -> pd.DataFrame:
    """Entered / exited changes of a segment (optionally of one profile), newest first."""
    return store.df(
        "SELECT segment, profile_id, change, changed_at, reason, source FROM membership_history"
        " WHERE segment = ? AND (? IS NULL OR profile_id = ?) ORDER BY changed_at DESC, profile_id LIMIT ?",
        [segment, profile_id, profile_id, limit],
    )
