"""Read what the Python evaluator needs from the store: profile data and population values."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlglot import exp

from microseg.segments.ast import Quantile, Segment, TraitCond, walk
from microseg.segments.catalog import CLUSTER_PREFIX, SCORE_PREFIX, Catalog
from microseg.segments.compiler import CompileContext, quantile_threshold
from microseg.segments.evaluate import ConsentRow, Ev, ProfileData, Snapshot
from microseg.store import Store

_EVENT_SKIP = {"id_key", "event_id", "received_at", "email_token", "anonymous_id", "user_id"}


def quantiles_used(segments: Iterable[Segment]) -> set[tuple[str, float]]:
    return {
        (n.trait, n.value.quantile)
        for seg in segments
        for _, n in walk(seg.rule)
        if isinstance(n, TraitCond) and isinstance(n.value, Quantile)
    }


def population_snapshot(
    store: Store, segments: Iterable[Segment], as_of: datetime, catalog: Catalog | None = None
) -> Snapshot:
    """Quantile thresholds over the population, computed by the same SQL as the batch."""
    ctx = CompileContext(as_of, catalog or Catalog(check_events=False))
    snap = Snapshot()
    for trait, q in sorted(quantiles_used(segments)):
        query = quantile_threshold(trait, q, ctx)
        assert isinstance(query, exp.Subquery)
        value = store.scalar(query.this)
        snap.quantiles[(trait, q)] = None if value is None else float(value)
    return snap


def score_rows(
    store: Store, profile_id: str | None
) -> dict[str, dict[str, list[tuple[datetime, int, float | None]]]]:
    """profile id -> model -> [(scored_at, version, score)] (all versions; time decides)."""
    out: dict[str, dict[str, list[tuple[datetime, int, float | None]]]] = {}
    if not store.table_exists("scores"):
        return out
    rows = store.rows(
        "SELECT profile_id, model, scored_at, version, score FROM scores"
        + (" WHERE profile_id = ?" if profile_id else ""),
        [profile_id] if profile_id else [],
    )
    for pid, model, scored_at, version, score in rows:
        out.setdefault(str(pid), {}).setdefault(str(model), []).append(
            (scored_at, int(version), None if score is None else float(score))
        )
    return out


def trait_rows(store: Store, profile_id: str | None, as_of: datetime) -> dict[str, dict[str, Any]]:
    """profile id -> {trait: value} from the traits table and the latest model scores."""
    out: dict[str, dict[str, Any]] = {}
    where, params = ("WHERE profile_id = ?", [profile_id]) if profile_id else ("", [])
    if store.table_exists("traits"):
        cur = store.execute(f"SELECT * FROM traits {where}", params)  # fixed text + bound param
        names = [d[0] for d in cur.description]
        for row in cur.fetchall():
            rec = dict(zip(names, row, strict=True))
            out[str(rec.pop("profile_id"))] = rec
    if store.table_exists("scores"):
        rows = store.rows(
            "SELECT profile_id, model, score FROM scores WHERE scored_at <= ?"
            + (" AND profile_id = ?" if profile_id else "")
            + " QUALIFY ROW_NUMBER() OVER (PARTITION BY profile_id, model"
            " ORDER BY scored_at DESC, version DESC) = 1",
            [as_of, *([profile_id] if profile_id else [])],
        )
        for pid, model, score in rows:
            out.setdefault(str(pid), {})[f"{SCORE_PREFIX}{model}"] = score
    if store.table_exists("cluster_membership"):
        rows = store.rows(
            "SELECT profile_id, run, cluster FROM cluster_membership WHERE assigned_at <= ?"
            + (" AND profile_id = ?" if profile_id else ""),
            [as_of, *([profile_id] if profile_id else [])],
        )
        for pid, run, cluster in rows:
            out.setdefault(str(pid), {})[f"{CLUSTER_PREFIX}{run}"] = cluster
    return out


def consent_rows(store: Store, profile_id: str | None) -> dict[str, dict[str, list[ConsentRow]]]:
    """profile id -> purpose -> consent rows."""
    out: dict[str, dict[str, list[ConsentRow]]] = {}
    rows = store.rows(
        "SELECT profile_id, purpose, recorded_at, granted, expires_at FROM consents"
        + (" WHERE profile_id = ?" if profile_id else ""),
        [profile_id] if profile_id else [],
    )
    for pid, purpose, recorded_at, granted, expires_at in rows:
        out.setdefault(str(pid), {}).setdefault(str(purpose), []).append(
            ConsentRow(recorded_at, bool(granted), expires_at)
        )
    return out


def profile_events(
    store: Store, profile_id: str, event_types: Iterable[str], as_of: datetime
) -> dict[str, list[Ev]]:
    """The profile's events of some types up to as_of (via all its linked id keys)."""
    types = sorted(set(event_types))
    if not types:
        return {}
    cur = store.execute(
        "SELECT e.* FROM events e JOIN identities i ON i.id_key = e.id_key"
        " WHERE i.profile_id = ? AND e.ts <= ? AND list_contains(?, e.event_type) ORDER BY e.ts",
        [profile_id, as_of, types],
    )
    names = [d[0] for d in cur.description]
    out: dict[str, list[Ev]] = {}
    for row in cur.fetchall():
        rec = {k: v for k, v in zip(names, row, strict=True) if k not in _EVENT_SKIP}
        out.setdefault(str(rec["event_type"]), []).append(Ev(rec["ts"], rec))
    return out


def load_profile(
    store: Store, profile_id: str, event_types: Iterable[str], as_of: datetime
) -> ProfileData:
    """Everything the evaluator needs about one profile, read from the store."""
    return ProfileData(
        profile_id,
        profile_events(store, profile_id, event_types, as_of),
        trait_rows(store, profile_id, as_of).get(profile_id, {}),
        consent_rows(store, profile_id).get(profile_id, {}),
        score_rows(store, profile_id).get(profile_id, {}),
    )


def all_profiles(store: Store) -> list[str]:
    return [
        str(r[0])
        for r in store.rows(
            "SELECT profile_id FROM profiles WHERE merged_into IS NULL ORDER BY profile_id"
        )
    ]


def segments_by_name(segments: Mapping[str, Segment] | Iterable[Segment]) -> dict[str, Segment]:
    if isinstance(segments, Mapping):
        return dict(segments)
    return {s.name: s for s in segments}
