"""Segment KPIs over time: DuckDB results against a pandas reference and hand-checked cases."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import kpis_support as ks
import numpy as np
import pandas as pd
import pytest

from microseg.config.models import EventSpec, Taxonomy
from microseg.errors import ConfigError, NotFoundError
from microseg.measure.kpis import ALL, COLUMNS, METRICS, KpiEvents, kpi_series, segment_kpis
from microseg.workspace import Workspace

AS_OF = datetime(2024, 2, 12)


@pytest.fixture(scope="module")
def planted() -> tuple[Workspace, ks.Planted, pd.DataFrame]:
    ws = Workspace.ephemeral()
    p = ks.build(ws)
    return ws, p, segment_kpis(ws.store, as_of=AS_OF)


@pytest.mark.parametrize("segment", [ALL, "vip", "legacy"])
def test_every_metric_matches_the_pandas_reference(
    planted: tuple[Workspace, ks.Planted, pd.DataFrame], segment: str
) -> None:
    _, p, df = planted
    ref = ks.reference(p, segment)
    got = df[df["segment"] == segment].merge(ref, on=["period", "metric"], how="inner")
    assert len(got) == len(ref)  # every reference value has a computed counterpart
    assert set(ref["metric"]) == set(METRICS)
    for row in got.itertuples(index=False):
        assert math.isclose(row.value, row.expected, rel_tol=1e-9, abs_tol=1e-9) or (
            np.isnan(row.value) and np.isnan(row.expected)
        ), (segment, row.period, row.metric, row.value, row.expected)


def test_frame_shape_grid_and_users(planted: tuple[Workspace, ks.Planted, pd.DataFrame]) -> None:
    _, _, df = planted
    assert list(df.columns) == COLUMNS
    assert df.attrs["notes"] == []
    assert list(dict.fromkeys(df["segment"])) == [ALL, "empty_seg", "legacy", "vip"]
    periods = sorted(df["period"].unique())
    assert [pd.Timestamp(x) for x in periods] == [
        pd.Timestamp(ks.START) + pd.Timedelta(weeks=w) for w in range(ks.WEEKS)
    ]
    assert len(df) == 4 * ks.WEEKS * len(METRICS)
    empty = df[df["segment"] == "empty_seg"].set_index("metric")
    assert (empty.loc["active_users", "value"] == 0).all()
    assert empty.loc["conversion_rate", "value"].isna().all()  # no denominator -> NaN
    conv = df[(df["metric"] == "conversion_rate") & (df["segment"] == ALL)]
    act = df[(df["metric"] == "active_users") & (df["segment"] == ALL)]
    assert (conv["users"].to_numpy() == act["value"].to_numpy()).all()
    # the unresolved "ghost" event counts in (all) only
    assert (
        act["value"].iloc[0]
        == ks.reference(planted[1], ALL).query("metric == 'active_users'")["expected"].iloc[0]
    )


def test_membership_follows_history(planted: tuple[Workspace, ks.Planted, pd.DataFrame]) -> None:
    ws, _, _ = planted
    # before the late entries, only the 60 batch members (minus exits) can be active vips
    df = segment_kpis(ws.store, segments=["vip"], as_of=ks.VIP_LATE_ENTRY_AT - timedelta(minutes=1))
    active = df[df["metric"] == "active_users"].set_index("period")["value"]
    assert active.max() <= 60
    week4 = pd.Timestamp(ks.VIP_LATE_ENTRY_AT).to_period("W-SUN").start_time
    full = segment_kpis(ws.store, segments=["vip"], as_of=AS_OF)
    full_active = full[full["metric"] == "active_users"].set_index("period")["value"]
    assert full_active[week4] >= active[week4]  # late entrants add activity in that week
    # without backfill nothing is known before the first batch computation
    nob = segment_kpis(ws.store, segments=["vip"], as_of=AS_OF, backfill=False)
    first_week = nob[(nob["metric"] == "active_users") & (nob["period"] == pd.Timestamp(ks.START))]
    assert first_week["value"].iloc[0] == 0
    assert ALL not in set(df["segment"])


def test_hand_checked_small_case() -> None:
    ws = Workspace.ephemeral()
    ws.store.ensure_columns("events", {"price": "number", "quantity": "number"})
    t = datetime(2024, 3, 5, 10)
    rows = [
        ("a", "page_view", t, "s1", None, None),  # bounce
        ("b", "page_view", t, "s2", None, None),
        ("b", "product_view", t + timedelta(seconds=60), "s2", None, None),
        ("b", "purchase", t + timedelta(seconds=120), "s2", 12.5, 4.0),  # revenue 50
    ]
    for i, (u, ev, ts, sid, price, qty) in enumerate(rows):
        ws.store.execute(
            "INSERT INTO events (event_id, event_type, ts, received_at, id_key, session_id, price,"
            " quantity) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [f"e{i}", ev, ts, ts, u, sid, price, qty],
        )
    df = segment_kpis(ws.store, as_of=datetime(2024, 3, 11), freq="D")
    day = df[df["period"] == pd.Timestamp("2024-03-05")].set_index("metric")["value"]
    assert day["active_users"] == 2 and day["sessions"] == 2
    assert day["bounce_rate"] == 0.5 and day["session_depth"] == 2.0
    assert day["avg_session_duration_s"] == 60.0 and day["repeat_visit_frequency"] == 1.0
    assert day["conversion_rate"] == 0.5
    assert day["revenue"] == 50.0 and day["revenue_per_user"] == 25.0  # price x quantity
    assert math.isnan(day["content_ctr"]) and math.isnan(day["email_open_rate"])
    assert sorted(df["period"].unique())[0] == pd.Timestamp("2024-03-05")
    assert len(df["period"].unique()) == 1  # not padded with empty days up to as_of
    padded = segment_kpis(
        ws.store, as_of=datetime(2024, 3, 12), end=datetime(2024, 3, 11), freq="D"
    )
    assert len(padded["period"].unique()) == 6  # an explicit end is kept: 5th .. 10th

    notes = " ".join(df.attrs["notes"])
    assert "content_view" in notes and "email_open" in notes and "purchase" not in notes


def test_missing_event_types_are_nan_with_a_note_not_a_crash() -> None:
    ws = Workspace.ephemeral()
    ks.build(ws, with_content=False)
    df = segment_kpis(ws.store, as_of=AS_OF, segments=[ALL])
    ctr = df[df["metric"] == "content_ctr"]["value"]
    assert ctr.isna().all()
    assert any("content_view" in n for n in df.attrs["notes"])
    # declared in the taxonomy (but never seen): a real zero count, no note
    tax = Taxonomy(events={"content_view": EventSpec(), "content_click": EventSpec()})
    declared = segment_kpis(ws.store, as_of=AS_OF, segments=[ALL], taxonomy=tax)
    assert not any("content_view" in n for n in declared.attrs["notes"])
    assert declared[declared["metric"] == "content_ctr"]["value"].isna().all()  # 0 views


def test_no_revenue_column_gives_nan_revenue() -> None:
    ws = Workspace.ephemeral()
    t = datetime(2024, 3, 5)
    ws.store.execute(
        "INSERT INTO events (event_id, event_type, ts, received_at, id_key) VALUES"
        " ('e1', 'purchase', ?, ?, 'u1')",
        [t, t],
    )
    df = segment_kpis(ws.store, as_of=datetime(2024, 3, 6), freq="D")
    by = df.set_index("metric")["value"]
    assert by["conversion_rate"] == 1.0 and math.isnan(by["revenue"])
    assert any("revenue" in n for n in df.attrs["notes"])


def test_configurable_event_names_and_taxonomy_mapping() -> None:
    tax = Taxonomy(
        events={"order_completed": EventSpec(), "promo_seen": EventSpec()},
        master={"event_type": {"order_completed": ["purchase"]}},
    )
    cfg = KpiEvents.from_taxonomy(tax, content_view="promo_seen")
    assert cfg.purchase == "order_completed" and cfg.content_view == "promo_seen"
    assert KpiEvents.from_taxonomy(Taxonomy(events={"transaction": EventSpec()})).purchase == (
        "transaction"
    )
    with pytest.raises(ConfigError, match="did you mean 'purchase'"):
        KpiEvents.from_taxonomy(tax, purchace="x")
    ws = Workspace.ephemeral()
    ks.build(ws)
    ws.store.execute(
        "UPDATE events SET event_type = 'order_completed' WHERE event_type = 'purchase'"
    )
    renamed = segment_kpis(ws.store, as_of=AS_OF, segments=[ALL], taxonomy=tax)
    ws2 = Workspace.ephemeral()
    ks.build(ws2)
    plain = segment_kpis(ws2.store, as_of=AS_OF, segments=[ALL])
    a = renamed[renamed["metric"] == "conversion_rate"]["value"].to_numpy()
    b = plain[plain["metric"] == "conversion_rate"]["value"].to_numpy()
    assert np.allclose(a, b)


def test_errors_and_edge_cases(planted: tuple[Workspace, ks.Planted, pd.DataFrame]) -> None:
    ws, _, _ = planted
    with pytest.raises(NotFoundError, match="did you mean 'vip'"):
        segment_kpis(ws.store, segments=["vipp"], as_of=AS_OF)
    with pytest.raises(ConfigError, match="frequency"):
        segment_kpis(ws.store, freq="fortnight", as_of=AS_OF)
    empty = segment_kpis(Workspace.ephemeral().store)
    assert list(empty.columns) == COLUMNS and empty.empty
    monthly = segment_kpis(ws.store, segments=[ALL], as_of=AS_OF, freq="M")
    assert sorted(monthly["period"].unique()) == [
        pd.Timestamp("2024-01-01"),
        pd.Timestamp("2024-02-01"),
    ]
    window = segment_kpis(
        ws.store, segments=[ALL], start=datetime(2024, 1, 15), end=datetime(2024, 1, 29)
    )
    assert sorted(window["period"].unique()) == [
        pd.Timestamp("2024-01-15"),
        pd.Timestamp("2024-01-22"),
    ]
    wide = kpi_series(window, "sessions")
    assert list(wide.columns) == [ALL] and len(wide) == 2
    with pytest.raises(NotFoundError, match="did you mean 'sessions'"):
        kpi_series(window, "sesions")


def test_hostile_segment_names_are_data_not_sql() -> None:
    ws = Workspace.ephemeral()
    ks.build(ws)
    evil = "x'); DROP TABLE events; --"
    ws.store.execute("INSERT INTO memberships VALUES (?, 'p0001', now())", [evil])
    df = segment_kpis(ws.store, segments=[evil], as_of=AS_OF)
    assert set(df["segment"]) == {evil}
    assert ws.store.table_exists("events")
