"""Real-time membership changes are persisted set-based, in order, last change wins."""

from __future__ import annotations

from datetime import datetime, timedelta

from microseg.segments.membership import apply_changes
from microseg.segments.realtime import MembershipChange
from microseg.store import Store

T0 = datetime(2024, 6, 1, 12)


def test_history_in_order_and_last_change_wins() -> None:
    store = Store(None)
    store.execute("INSERT INTO memberships VALUES ('vip', 'p3', ?)", [T0 - timedelta(days=1)])
    changes = [
        MembershipChange("vip", "p1", "entered", T0, "purchase count 3 > 2"),
        MembershipChange("vip", "p2", "entered", T0, "purchase count 3 > 2"),
        MembershipChange("vip", "p1", "exited", T0 + timedelta(minutes=5), "window passed"),
        MembershipChange("vip", "p3", "exited", T0 + timedelta(minutes=6), "window passed"),
        MembershipChange("new", "p1", "entered", T0 + timedelta(minutes=7), "first visit"),
    ]
    assert apply_changes(store, changes) == 5
    assert apply_changes(store, []) == 0
    assert sorted(store.rows("SELECT segment, profile_id, entered_at FROM memberships")) == [
        ("new", "p1", T0 + timedelta(minutes=7)),
        ("vip", "p2", T0),
    ]
    history = store.rows(
        "SELECT segment, profile_id, change, reason, source FROM membership_history"
        " ORDER BY changed_at, profile_id"
    )
    assert history == [
        ("vip", "p1", "entered", "purchase count 3 > 2", "realtime"),
        ("vip", "p2", "entered", "purchase count 3 > 2", "realtime"),
        ("vip", "p1", "exited", "window passed", "realtime"),
        ("vip", "p3", "exited", "window passed", "realtime"),
        ("new", "p1", "entered", "first visit", "realtime"),
    ]
