"""Long-running server memory: decision-state structures stay bounded by *active* profiles.

Counts entries after many synthetic decisions / events (no timing): cap counters and
recent-event rings of profiles whose windows have passed are dropped by the engine's upkeep,
and what is still inside a window is kept (same answers before and after the prune).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from decision_support import engine, profile

from microseg.personalize.decision_state import ImpressionCounter
from microseg.personalize.decisions import PRUNE_EVERY, DecisionEngine, DecisionRequest
from microseg.store import Store

NOW = datetime(2026, 5, 1, 12, 0, 0)
HOME = DecisionRequest(["home_hero"])


def test_impression_counters_of_expired_windows_are_dropped() -> None:
    counter = ImpressionCounter({"cart": (2, timedelta(days=1)), "promo": (5, timedelta(hours=1))})
    for i in range(5000):
        counter.record(f"p{i}", "cart", NOW)
        counter.record(f"p{i}", "promo", NOW)
    counter.record("p1", "cart", NOW + timedelta(hours=20))
    assert len(counter) == 10_000
    later = NOW + timedelta(hours=2)
    assert counter.prune(later) == 5000  # every promo counter: its 1 h window has passed
    assert len(counter) == 5000
    assert counter.count("p7", "cart", later - timedelta(days=1)) == 1  # still inside: kept
    assert counter.count("p7", "promo", later - timedelta(hours=1)) == 0
    end = NOW + timedelta(days=1, hours=1)
    assert counter.prune(end) == 4999  # p1's newest cart impression is 5 h old: kept
    assert len(counter) == 1
    assert counter.count("p1", "cart", end - timedelta(days=1)) == 1
    assert counter.prune(end) == 0


def _serve_many(eng: DecisionEngine, n: int) -> None:
    for i in range(n):
        pid = f"p{i}"
        eng.recent.add(pid, "add_to_cart", NOW - timedelta(hours=1), {"category": "shoes"})
        eng.consents.observe(pid, "marketing", True, NOW - timedelta(hours=2))
        assert eng.decide(profile(pid), HOME, NOW)[0]["rule"] == "cart"


def test_engine_upkeep_keeps_decision_state_bounded(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    try:
        eng = engine(store=store)
        _serve_many(eng, 2000)
        assert len(eng.impressions) == 2000 and len(eng.recent) == 2000
        eng.upkeep(NOW)  # first upkeep: flush + prune of what is already out of window
        assert len(eng.impressions) == 2000  # the 1-day cap window still holds them
        later = NOW + timedelta(days=2)
        eng.upkeep(later)
        assert later - NOW >= PRUNE_EVERY
        assert len(eng.impressions) == 0  # was 2000 for the life of the server
        assert len(eng.recent) == 0  # the 24 h lookback has passed too
        # a returning profile is served as before (caps count from zero again)
        _cart_again = later - timedelta(hours=1)
        eng.recent.add("p3", "add_to_cart", _cart_again, {"category": "shoes"})
        eng.consents.observe("p3", "marketing", True, later - timedelta(hours=2))
        out = eng.decide(profile("p3"), HOME, later)[0]
        assert out["rule"] == "cart" and out["why"]["cap"]["used"] == 1
    finally:
        store.close()
