"""Stored experiments: sticky persisted assignments, exposures, SQL sufficient statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from microseg.errors import MicrosegError, NotFoundError
from microseg.experiments.analysis import analyze_experiment
from microseg.experiments.assignment import ExperimentSpec, VariantSpec
from microseg.experiments.stats import SufficientStats
from microseg.experiments.store import (
    arm_stats_from_events,
    arm_stats_query,
    assign_profiles,
    record_exposures,
    save_experiment,
)
from microseg.store import sql as q
from microseg.store.duckdb_store import Store


@pytest.fixture()
def store() -> Store:
    s = Store()
    s.ensure_columns("events", {"revenue": "number"})
    save_experiment(
        s,
        ExperimentSpec(
            key="tailoring",
            variants=[VariantSpec(name="generic"), VariantSpec(name="tailored")],
            control="generic",
        ),
    )
    return s


def _seed_events(store: Store, profiles: list[str], seed: int = 0) -> pd.DataFrame:
    """identities + purchase events; returns the per-profile truth."""
    rng = np.random.default_rng(seed)
    ident = pd.DataFrame(
        {
            "id_key": [f"u:{p}" for p in profiles],
            "id_type": "user_id",
            "id_value": profiles,
            "profile_id": profiles,
        }
    )
    store.con.register("_ident", ident)
    store.execute(
        "INSERT INTO identities (id_key, id_type, id_value, profile_id) SELECT * FROM _ident"
    )
    rows = []
    for p in profiles:
        for _ in range(rng.integers(0, 3)):
            day = int(rng.integers(1, 10))
            rows.append(
                (
                    f"e{len(rows)}",
                    "purchase",
                    pd.Timestamp(2024, 1, day),
                    pd.Timestamp(2024, 1, day),
                    f"u:{p}",
                    float(rng.integers(5, 50)),
                )
            )
    ev = pd.DataFrame(
        rows, columns=["event_id", "event_type", "ts", "received_at", "id_key", "revenue"]
    )
    store.con.register("_ev", ev)
    store.execute(
        "INSERT INTO events (event_id, event_type, ts, received_at, id_key, revenue) SELECT * FROM _ev"
    )
    return ev


def test_assignments_are_persisted_and_sticky(store: Store) -> None:
    first = assign_profiles(store, "tailoring", [f"p{i}" for i in range(200)])
    assert set(first["variant"]) == {"generic", "tailored"}
    # even if the definition changes (new variant), stored assignments never move
    save_experiment(
        store,
        ExperimentSpec(
            key="tailoring",
            variants=[
                VariantSpec(name="generic"),
                VariantSpec(name="tailored"),
                VariantSpec(name="third", weight=5),
            ],
        ),
    )
    again = assign_profiles(store, "tailoring", [f"p{i}" for i in range(200)])
    assert again.equals(first)
    with pytest.raises(NotFoundError, match="did you mean 'tailoring'"):
        assign_profiles(store, "tailorng", ["p1"])


def test_sql_sufficient_stats_match_pandas(store: Store) -> None:
    profiles = [f"p{i}" for i in range(300)]
    assigned = assign_profiles(store, "tailoring", profiles)
    exposures = pd.DataFrame({"profile_id": profiles, "exposed_at": pd.Timestamp(2024, 1, 5)})
    assert record_exposures(store, "tailoring", exposures) == 300
    ev = _seed_events(store, profiles)
    arms = {a.name: a for a in arm_stats_from_events(store, "tailoring", "purchase", "revenue")}
    # truth in pandas: only events at/after exposure count
    after = ev[ev["ts"] >= pd.Timestamp(2024, 1, 5)].assign(
        profile_id=lambda d: d["id_key"].str[2:]
    )
    per = after.groupby("profile_id")["revenue"].sum()
    for variant, g in assigned.groupby("variant"):
        rev = g["profile_id"].map(per).fillna(0.0).to_numpy()
        assert arms[variant].conversion == SufficientStats.binary(len(g), int((rev > 0).sum()))
        assert arms[variant].revenue == SufficientStats(
            len(g), pytest.approx(rev.sum()), pytest.approx((rev**2).sum())
        )
    res = analyze_experiment(list(arms.values()), control="generic")
    assert {r.metric for r in res.results} == {"conversion", "revenue"}


def test_query_is_parameterised_and_names_are_quoted() -> None:
    sql = q.render(arm_stats_query("x'; DROP TABLE events; --", 'rev"enue'))
    assert "DROP TABLE" not in sql and sql.count("?") == 2
    assert '"rev""enue"' in sql


def test_exposure_errors(store: Store) -> None:
    with pytest.raises(MicrosegError, match="not assigned"):
        record_exposures(
            store,
            "tailoring",
            pd.DataFrame({"profile_id": ["nobody"], "exposed_at": ["2024-01-01"]}),
        )
    with pytest.raises(MicrosegError, match="exposures need columns"):
        record_exposures(store, "tailoring", pd.DataFrame({"pid": ["x"]}))
    with pytest.raises(MicrosegError, match="no column 'revenu'"):
        arm_stats_from_events(store, "tailoring", "purchase", "revenu")
