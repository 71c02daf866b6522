"""Persist experiments, sticky assignments and exposures; compute arm statistics in SQL.

Tables (migration 6): ``experiments``, ``experiment_assignments`` (one row per experiment
and profile — the first assignment is kept, so re-running never reshuffles), and
``experiment_exposures``. :func:`arm_stats_from_events` lets DuckDB produce the sufficient
statistics (n, conversions, revenue sum and sum of squares per variant); every user-supplied
name or value is an identifier node or a bound parameter in a sqlglot tree.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

import pandas as pd
import sqlglot
from sqlglot import exp

from microseg.errors import MicrosegError, NotFoundError, did_you_mean
from microseg.experiments.analysis import ArmStats
from microseg.experiments.assignment import ExperimentSpec
from microseg.experiments.stats import SufficientStats
from microseg.store import sql as q
from microseg.store.duckdb_store import Store, utcnow


def save_experiment(store: Store, spec: ExperimentSpec, actor: str = "system") -> None:
    """Create or update an experiment definition (the key is the identity)."""
    with store.transaction():
        store.execute("DELETE FROM experiments WHERE experiment_key = ?", [spec.key])
        store.execute(
            "INSERT INTO experiments (experiment_key, definition, control, planned_per_arm, "
            "status, created_at) VALUES (?, ?, ?, ?, 'draft', ?)",
            [spec.key, spec.model_dump_json(), spec.control, spec.planned_per_arm, utcnow()],
        )
        store.audit(actor, "experiment.save", spec.key)


def load_saved(store: Store, key: str) -> ExperimentSpec:
    """The stored definition of experiment ``key``."""
    row = store.rows("SELECT definition FROM experiments WHERE experiment_key = ?", [key])
    if not row:
        keys = [r[0] for r in store.rows("SELECT experiment_key FROM experiments")]
        raise NotFoundError(f"no experiment {key!r}{did_you_mean(key, keys)}")
    return ExperimentSpec.model_validate(json.loads(row[0][0]))


def assign_profiles(
    store: Store, key: str, profile_ids: Iterable[str], at: datetime | None = None
) -> pd.DataFrame:
    """Assign profiles (hash-based) and persist; existing assignments are never changed.

    Returns the stored ``profile_id, variant`` for the requested profiles.
    """
    exp_ = load_saved(store, key).to_experiment()
    ids = pd.Series([str(p) for p in profile_ids], dtype="string").drop_duplicates()
    assigned = exp_.assign_many(ids.tolist())[["profile_id", "variant"]]
    assigned.insert(0, "experiment_key", key)
    assigned["assigned_at"] = pd.Timestamp(at or utcnow())
    with store.transaction():
        store.con.register("_new_assignments", assigned)
        try:
            store.execute(
                "INSERT INTO experiment_assignments "
                "SELECT experiment_key, profile_id, variant, assigned_at FROM _new_assignments "
                "ON CONFLICT DO NOTHING"
            )
        finally:
            store.con.unregister("_new_assignments")
    out = store.df(
        "SELECT a.profile_id, a.variant FROM experiment_assignments a "
        "WHERE a.experiment_key = ? ORDER BY a.profile_id",
        [key],
    )
    return out[out["profile_id"].isin(set(ids))].reset_index(drop=True)


def record_exposures(store: Store, key: str, exposures: pd.DataFrame) -> int:
    """Append exposures (``profile_id, exposed_at[, context]``); the variant comes from the
    stored assignment, so an exposure of an unassigned profile is an error."""
    need = {"profile_id", "exposed_at"}
    if not need <= set(exposures.columns):
        raise MicrosegError(f"exposures need columns {sorted(need)}; got {list(exposures.columns)}")
    df = exposures.assign(
        experiment_key=key,
        profile_id=exposures["profile_id"].astype(str),
        exposed_at=pd.to_datetime(exposures["exposed_at"]),
        context=exposures["context"].astype(str) if "context" in exposures else None,
    )[["experiment_key", "profile_id", "exposed_at", "context"]]
    with store.transaction():
        store.con.register("_new_exposures", df)
        try:
            missing = store.rows(
                "SELECT count(*) FROM _new_exposures e LEFT JOIN experiment_assignments a "
                "ON a.experiment_key = e.experiment_key AND a.profile_id = e.profile_id "
                "WHERE a.variant IS NULL"
            )[0][0]
            if missing:
                raise MicrosegError(f"{missing} exposure(s) for profiles not assigned to {key!r}")
            store.execute(
                "INSERT INTO experiment_exposures SELECT e.experiment_key, e.profile_id, "
                "a.variant, e.exposed_at, e.context FROM _new_exposures e JOIN experiment_assignments a "
                "ON a.experiment_key = e.experiment_key AND a.profile_id = e.profile_id"
            )
        finally:
            store.con.unregister("_new_exposures")
    return len(df)


def arm_stats_query(conversion_event: str, revenue_column: str | None = None) -> exp.Select:
    """SQL (sqlglot tree, parameters ``?`` = experiment key, conversion event) computing per
    variant: ``n, conversions, revenue_sum, revenue_sum_sq`` over exposed profiles.

    A profile counts from its first exposure; it converts if it has a ``conversion_event``
    at or after that moment (events resolve to profiles through ``identities``).
    """
    del conversion_event  # bound as a parameter, never inlined
    rev = (
        exp.Coalesce(this=q.col(revenue_column, "ev"), expressions=[exp.Literal.number(0)])
        if revenue_column
        else exp.Literal.number(0)
    )
    first = (
        sqlglot.select(
            q.col("profile_id"),
            exp.alias_(exp.Min(this=q.col("variant")), "variant"),
            exp.alias_(exp.Min(this=q.col("exposed_at")), "first_exposed"),
        )
        .from_(q.table("experiment_exposures"))
        .where(exp.EQ(this=q.col("experiment_key"), expression=exp.Placeholder()))
        .group_by(q.col("profile_id"))
    )
    per_user = (
        sqlglot.select(
            q.col("profile_id", "x"),
            q.col("variant", "x"),
            exp.alias_(
                exp.Max(
                    this=exp.Case()
                    .when(q.col("event_id", "ev").is_(exp.Null()).not_(), exp.Literal.number(1))
                    .else_(exp.Literal.number(0))
                ),
                "converted",
            ),
            exp.alias_(exp.Sum(this=rev), "revenue"),
        )
        .from_(exp.alias_(exp.Subquery(this=first), "x", table=True))
        .join(
            exp.alias_(q.table("identities"), "i", table=True),
            on=exp.EQ(this=q.col("profile_id", "i"), expression=q.col("profile_id", "x")),
            join_type="left",
        )
        .join(
            exp.alias_(q.table("events"), "ev", table=True),
            on=exp.and_(
                exp.EQ(this=q.col("id_key", "ev"), expression=q.col("id_key", "i")),
                exp.EQ(this=q.col("event_type", "ev"), expression=exp.Placeholder()),
                exp.GTE(this=q.col("ts", "ev"), expression=q.col("first_exposed", "x")),
            ),
            join_type="left",
        )
        .group_by(q.col("profile_id", "x"), q.col("variant", "x"))
    )
    r = q.col("revenue")
    return (
        sqlglot.select(
            q.col("variant"),
            exp.alias_(exp.Count(this=exp.Star()), "n"),
            exp.alias_(exp.Sum(this=q.col("converted")), "conversions"),
            exp.alias_(exp.Sum(this=r), "revenue_sum"),
            exp.alias_(exp.Sum(this=exp.Mul(this=r, expression=r)), "revenue_sum_sq"),
        )
        .from_(exp.alias_(exp.Subquery(this=per_user), "u", table=True))
        .group_by(q.col("variant"))
        .order_by(q.col("variant"))
    )


def arm_stats_from_events(
    store: Store, key: str, conversion_event: str, revenue_column: str | None = None
) -> list[ArmStats]:
    """Sufficient statistics per variant from exposures and events, computed by DuckDB."""
    load_saved(store, key)
    if revenue_column is not None and revenue_column not in store.columns("events"):
        cols = list(store.columns("events"))
        raise MicrosegError(
            f"events have no column {revenue_column!r}{did_you_mean(revenue_column, cols)}"
        )
    df = store.df(arm_stats_query(conversion_event, revenue_column), [key, conversion_event])
    arms = []
    for row in df.itertuples(index=False):
        n = int(row.n)
        revenue = (
            SufficientStats(n, float(row.revenue_sum), float(row.revenue_sum_sq))
            if revenue_column
            else None
        )
        arms.append(
            ArmStats(str(row.variant), SufficientStats.binary(n, int(row.conversions)), revenue)
        )
    return arms
