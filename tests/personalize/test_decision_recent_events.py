"""Recent-event rings: bounded per profile and type, time-ordered, filtered, pruned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from microseg.personalize.recent_events import ALL, RecentEvents

NOW = datetime(2026, 5, 1, 12)


def test_rings_are_bounded_ordered_and_keep_only_watched_data() -> None:
    rings = RecentEvents(
        {"add_to_cart": ["category"], "purchase": [ALL]}, timedelta(days=1), per_type=3
    )
    assert not rings.add("p1", "page_view", NOW, {"url": "/"})  # not watched
    for i in range(5):
        rings.add(
            "p1", "add_to_cart", NOW - timedelta(minutes=10 - i), {"category": f"c{i}", "sku": i}
        )
    kept = rings.of("p1")
    assert [e.props for e in kept] == [{"category": "c2"}, {"category": "c3"}, {"category": "c4"}]
    # a late event is put in time order (and the oldest falls out of the bounded ring)
    rings.add("p1", "add_to_cart", NOW - timedelta(minutes=7, seconds=30), {"category": "late"})
    assert [e.props["category"] for e in rings.of("p1")] == ["late", "c3", "c4"]
    # ALL keeps every property except the bookkeeping columns; aware times become naive UTC
    rings.add(
        "p1", "purchase", datetime(2026, 5, 1, 13, tzinfo=UTC), {"order_id": "o", "user_id": "u"}
    )
    (purchase,) = [e for e in rings.of("p1") if e.event_type == "purchase"]
    assert purchase.props == {"order_id": "o"} and purchase.ts == datetime(2026, 5, 1, 13)
    # latest(): newest match at or after `since`, filters by equality or membership
    since = NOW - timedelta(hours=1)
    assert rings.latest("p1", "add_to_cart", {"category": ["c3", "zz"]}, since).props == {
        "category": "c3"
    }
    assert rings.latest("p1", "add_to_cart", {"category": "c3"}, NOW - timedelta(minutes=6)) is None
    assert rings.latest("nobody", "add_to_cart", {}, since) is None


def test_prune_drops_expired_events_and_empty_profiles() -> None:
    rings = RecentEvents({"add_to_cart": []}, timedelta(hours=24))
    for i in range(2_500):
        rings.add(f"p{i}", "add_to_cart", NOW - timedelta(hours=30 if i % 2 else 1), {})
    rings.add("p1", "add_to_cart", NOW - timedelta(hours=2), {})
    assert len(rings) == 2_500
    dropped = rings.prune(NOW, chunk=700)
    assert dropped == 1_250
    assert len(rings) == 1_251  # odd profiles gone, except p1 with a recent event
    assert [e.ts for e in rings.of("p1")] == [NOW - timedelta(hours=2)]
