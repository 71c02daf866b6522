"""Real-time evaluator memory: a profile that goes quiet does not keep its events for ever."""

from __future__ import annotations

from datetime import datetime, timedelta

from microseg.segments import RealtimeEvaluator, parse_segment

T0 = datetime(2026, 1, 1, 12, 0)


def kept(rt: RealtimeEvaluator) -> int:
    return sum(len(evs) for data in rt.profiles.values() for evs in data.events.values())


def test_one_time_visitors_are_pruned_by_the_sweep() -> None:
    seg = parse_segment({"name": "live", "rule": {"event": "page_view", "last": "2m", "gte": 1}})
    rt = RealtimeEvaluator([seg])
    for i in range(1000):
        rt.on_event({"profile_id": f"v{i}", "event_type": "page_view", "ts": T0})
    assert kept(rt) == 1000 and len(rt.members["live"]) == 1000
    changes = rt.sweep(T0 + timedelta(minutes=3))
    assert len(changes) == 1000 and {c.change for c in changes} == {"exited"}
    assert kept(rt) == 0  # was 1000: nothing prunes a quiet profile's buffers but the sweep
    assert not rt.members["live"] and rt.pending_timers() == 0
    assert all(not data.events for data in rt.profiles.values())
    # a visitor coming back is judged as before
    back = rt.on_event(
        {"profile_id": "v1", "event_type": "page_view", "ts": T0 + timedelta(minutes=5)}
    )
    assert [(c.profile_id, c.change) for c in back] == [("v1", "entered")]


def test_events_a_longer_window_still_reads_are_kept() -> None:
    segs = [
        parse_segment({"name": "live", "rule": {"event": "page_view", "last": "2m", "gte": 1}}),
        parse_segment({"name": "busy", "rule": {"event": "page_view", "last": "1h", "gte": 2}}),
    ]
    rt = RealtimeEvaluator(segs)
    rt.on_event({"profile_id": "a", "event_type": "page_view", "ts": T0})
    exited = rt.sweep(T0 + timedelta(minutes=3))
    assert [(c.segment, c.change) for c in exited] == [("live", "exited")]
    assert kept(rt) == 1  # the 1 h window still needs it
    changes = rt.on_event(
        {"profile_id": "a", "event_type": "page_view", "ts": T0 + timedelta(minutes=30)}
    )
    assert sorted((c.segment, c.change) for c in changes) == [
        ("busy", "entered"),
        ("live", "entered"),
    ]
    rt.sweep(T0 + timedelta(hours=2))
    assert kept(rt) == 0 and not rt.members["busy"] and not rt.members["live"]
