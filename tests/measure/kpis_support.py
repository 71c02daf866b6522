"""Synthetic KPI data with planted rates, and an independent pandas reference of the KPIs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from microseg.store.duckdb_store import Store
from microseg.workspace import Workspace

START = datetime(2024, 1, 1)  # a Monday
WEEKS = 6
N_USERS = 240
BATCH_AT = datetime(2024, 1, 8)  # first batch computation of "vip" (backfilled before)
VIP_EXIT_AT = datetime(2024, 1, 22, 10)
VIP_LATE_ENTRY_AT = datetime(2024, 1, 29, 12)
FOREVER_FROM = pd.Timestamp("1900-01-01")
FOREVER_TO = pd.Timestamp("9999-12-31")


@dataclass
class Planted:
    """What the generator planted, to assert exact values against."""

    events: pd.DataFrame  # profile_id, event_type, ts, session_id, revenue
    history: pd.DataFrame  # segment, profile_id, change, changed_at, source
    memberships: pd.DataFrame  # segment, profile_id
    sends: pd.DataFrame  # profile_id, sent_at


def build(ws: Workspace, seed: int = 7, *, with_content: bool = True) -> Planted:
    """Fill ``ws.store`` with users, sessions, purchases, email and content events."""
    rng = np.random.default_rng(seed)
    store = ws.store
    store.ensure_columns("events", {"revenue": "number"})
    rows: list[dict[str, object]] = []
    sends: list[dict[str, object]] = []
    for u in range(N_USERS):
        pid = f"p{u:04d}"
        for w in range(WEEKS):
            week = START + timedelta(weeks=w)
            n_sessions = int(rng.poisson(1.5))
            for s in range(n_sessions):
                t0 = week + timedelta(
                    days=int(rng.integers(0, 7)), hours=int(rng.integers(0, 20)), minutes=s * 3
                )
                depth = 1 if rng.random() < 0.3 else int(rng.integers(2, 6))
                sid = f"ms-{pid}-{w}-{s}"
                for k in range(depth):
                    ev = "page_view"
                    rev = None
                    if k == depth - 1 and depth > 1 and rng.random() < 0.2:
                        ev, rev = "purchase", float(rng.integers(5, 200))
                    elif with_content and k == 1 and rng.random() < 0.5:
                        ev = "content_view"
                    elif with_content and k == 2 and rng.random() < 0.4:
                        ev = "content_click"
                    ts = t0 + timedelta(seconds=int(45 * k + rng.integers(0, 30)))
                    rows.append(_event(pid, ev, ts, sid, rev))
            if u % 3 == 0:  # weekly newsletter for a third of users
                sent_at = week + timedelta(days=1, hours=9)
                sends.append({"profile_id": pid, "sent_at": sent_at})
                if rng.random() < 0.4:
                    rows.append(_event(pid, "email_open", sent_at + timedelta(hours=2), None, None))
                    if rng.random() < 0.5:
                        rows.append(
                            _event(pid, "email_click", sent_at + timedelta(hours=3), None, None)
                        )
    # an unresolved event (no identity row): counts only under (all)
    rows.append(
        {**_event("ghost", "page_view", START + timedelta(days=2), "ms-ghost", None), "id_key": "x"}
    )
    events = pd.DataFrame(rows)
    _insert_events(store, events)
    _insert_identities(store, [f"p{u:04d}" for u in range(N_USERS)])
    history, memberships = _memberships(store)
    _insert_sends(store, pd.DataFrame(sends))
    ev = events.assign(profile_id=events["id_key"].str.removeprefix("user_id:"))
    return Planted(ev, history, memberships, pd.DataFrame(sends))


def _event(
    pid: str, ev: str, ts: datetime, sid: str | None, rev: float | None
) -> dict[str, object]:
    return {
        "event_type": ev,
        "ts": ts,
        "session_id": sid,
        "revenue": rev,
        "id_key": f"user_id:{pid}",
    }


def _insert_events(store: Store, events: pd.DataFrame) -> None:
    df = events.copy()
    df["event_id"] = [f"e{i}" for i in range(len(df))]
    df["received_at"] = df["ts"]
    store.con.register("_ev_in", df)
    store.execute(
        "INSERT INTO events (event_id, event_type, ts, received_at, id_key, session_id, revenue)"
        " SELECT event_id, event_type, ts, received_at, id_key, session_id, revenue FROM _ev_in"
    )
    store.con.unregister("_ev_in")


def _insert_identities(store: Store, pids: list[str]) -> None:
    df = pd.DataFrame({"id_key": [f"user_id:{p}" for p in pids], "profile_id": pids})
    store.con.register("_id_in", df)
    store.execute(
        "INSERT INTO identities (id_key, id_type, id_value, profile_id)"
        " SELECT id_key, 'user_id', profile_id, profile_id FROM _id_in"
    )
    store.execute("INSERT INTO profiles SELECT profile_id, now(), now(), NULL FROM _id_in")
    store.con.unregister("_id_in")


def _memberships(store: Store) -> tuple[pd.DataFrame, pd.DataFrame]:
    """vip: batch at BATCH_AT (users 0-59), 0-14 exit, 200-209 enter later (real time);
    fresh: batch at week 3 (users 100-129, not backfilled beyond its first batch... they are);
    legacy: no history, only current memberships (users 60-89)."""
    h: list[tuple[str, str, str, datetime, str]] = []
    for u in range(60):
        h.append(("vip", f"p{u:04d}", "entered", BATCH_AT, "batch"))
    for u in range(15):
        h.append(("vip", f"p{u:04d}", "exited", VIP_EXIT_AT, "batch"))
    for u in range(200, 210):
        h.append(("vip", f"p{u:04d}", "entered", VIP_LATE_ENTRY_AT, "realtime"))
    for u in range(5):  # re-entry of some exited vips
        h.append(("vip", f"p{u:04d}", "entered", VIP_LATE_ENTRY_AT + timedelta(days=3), "batch"))
    hist = pd.DataFrame(h, columns=["segment", "profile_id", "change", "changed_at", "source"])
    current = pd.DataFrame(
        [("legacy", f"p{u:04d}") for u in range(60, 90)], columns=["segment", "profile_id"]
    )
    store.con.register("_h_in", hist)
    store.con.register("_m_in", current)
    store.execute(
        "INSERT INTO membership_history SELECT segment, profile_id, change, changed_at, 'test',"
        " source, changed_at FROM _h_in"
    )
    store.execute("INSERT INTO memberships SELECT segment, profile_id, now() FROM _m_in")
    for name in ("vip", "legacy", "empty_seg"):
        store.execute(
            "INSERT INTO segments (name, definition, checksum, updated_at) VALUES (?, '{}', 'x', now())",
            [name],
        )
    store.con.unregister("_h_in")
    store.con.unregister("_m_in")
    return hist, current


def _insert_sends(store: Store, sends: pd.DataFrame) -> None:
    df = sends.assign(send_key=[f"s{i}" for i in range(len(sends))])
    store.con.register("_s_in", df)
    store.execute(
        "INSERT INTO sends (send_key, profile_id, channel, status, created_at, updated_at, sent_at)"
        " SELECT send_key, profile_id, 'email', 'sent', sent_at, sent_at, sent_at FROM _s_in"
    )
    # a failed send must not count
    store.execute(
        "INSERT INTO sends (send_key, profile_id, channel, status, created_at, updated_at)"
        " VALUES ('failed-1', 'p0000', 'email', 'failed', now(), now())"
    )
    store.con.unregister("_s_in")


# --------------------------------------------------------------------------- reference
def intervals(p: Planted) -> pd.DataFrame:
    """Membership intervals [valid_from, valid_to) by the documented rule, in pandas."""
    out = []
    h = p.history.sort_values(["segment", "profile_id", "changed_at"], kind="stable")
    for seg, g in h.groupby("segment"):
        first_batch = g.loc[g["source"] == "batch", "changed_at"].min()
        for pid, gg in g.groupby("profile_id"):
            changes = list(gg.itertuples(index=False))
            for i, c in enumerate(changes):
                nxt = changes[i + 1].changed_at if i + 1 < len(changes) else FOREVER_TO
                if c.change == "entered":
                    frm = (
                        FOREVER_FROM
                        if i == 0 and c.changed_at == first_batch and c.source == "batch"
                        else c.changed_at
                    )
                    out.append((seg, pid, pd.Timestamp(frm), pd.Timestamp(nxt)))
                elif i == 0:
                    out.append((seg, pid, FOREVER_FROM, pd.Timestamp(c.changed_at)))
    for row in p.memberships.itertuples(index=False):
        out.append((row.segment, row.profile_id, FOREVER_FROM, FOREVER_TO))
    return pd.DataFrame(out, columns=["segment", "profile_id", "valid_from", "valid_to"])


def reference(p: Planted, segment: str) -> pd.DataFrame:
    """Weekly KPIs of one segment (or "(all)") computed row by row in pandas."""
    ev = p.events.copy()
    ev["ts"] = pd.to_datetime(ev["ts"])
    sends = p.sends.assign(sent_at=pd.to_datetime(p.sends["sent_at"]))
    if segment != "(all)":
        iv = intervals(p)
        iv = iv[iv["segment"] == segment]

        def member(df: pd.DataFrame, col: str) -> pd.Series:
            m = df.reset_index().merge(iv, on="profile_id")
            ok = (m[col] >= m["valid_from"]) & (m[col] < m["valid_to"])
            return df.index.isin(m.loc[ok, "index"])

        ev = ev[member(ev, "ts")]
        sends = sends[member(sends, "sent_at")]
    week = ev["ts"].dt.to_period("W-SUN").dt.start_time
    ev = ev.assign(period=week)
    out: dict[tuple[pd.Timestamp, str], float] = {}
    for period, g in ev.groupby("period"):
        active = g["profile_id"].nunique()
        conv = g.loc[g["event_type"] == "purchase", "profile_id"].nunique()
        out[(period, "active_users")] = active
        out[(period, "conversion_rate")] = conv / active
        rev = g["revenue"].sum()
        out[(period, "revenue")] = rev
        out[(period, "revenue_per_user")] = rev / active
        views = (g["event_type"] == "content_view").sum()
        clicks = (g["event_type"] == "content_click").sum()
        out[(period, "content_ctr")] = clicks / views if views else np.nan
    s = ev[ev["session_id"].notna()].groupby(["profile_id", "session_id"])
    sess = s["ts"].agg(["min", "max", "count"]).reset_index()
    sess["period"] = sess["min"].dt.to_period("W-SUN").dt.start_time
    for period, g in sess.groupby("period"):
        dur = (g["max"] - g["min"]).dt.total_seconds()
        out[(period, "sessions")] = len(g)
        out[(period, "avg_session_duration_s")] = dur.mean()
        out[(period, "session_depth")] = g["count"].mean()
        out[(period, "bounce_rate")] = (g["count"] == 1).mean()
        out[(period, "repeat_visit_frequency")] = len(g) / g["profile_id"].nunique()
    sends = sends.assign(period=sends["sent_at"].dt.to_period("W-SUN").dt.start_time)
    for period, g in sends.groupby("period"):
        recips = set(g["profile_id"])
        e = ev[ev["period"] == period]
        opened = set(e.loc[e["event_type"] == "email_open", "profile_id"]) & recips
        clicked = set(e.loc[e["event_type"] == "email_click", "profile_id"]) & recips
        out[(period, "email_sends")] = len(g)
        out[(period, "email_open_rate")] = len(opened) / len(recips)
        out[(period, "email_click_rate")] = len(clicked) / len(recips)
    frame = pd.Series(out, name="expected").rename_axis(["period", "metric"]).reset_index()
    return frame
