"""Memberships computed elsewhere (Spark) are saved exactly as a DuckDB batch run saves them."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
from segments_support import AS_OF, fixed_events, fixed_traits

from microseg.config.models import ProjectSettings
from microseg.errors import ConfigError
from microseg.segments import compute_segments, parse_segment
from microseg.segments.membership import members, save_memberships
from microseg.store import Store

RULES = [
    {"name": "viewers", "rule": {"event": "product_view", "last": "30d", "gte": 1}},
    {"name": "buyers", "rule": {"event": "purchase", "last": "30d", "gte": 1}},
    {
        "name": "viewers_not_buyers",
        "rule": {"all": [{"segment": "viewers"}, {"not": {"segment": "buyers"}}]},
    },
]


def history(store: Store) -> list[tuple[object, ...]]:
    return sorted(
        store.rows("SELECT segment, profile_id, change, changed_at, source FROM membership_history")
    )


def test_saved_memberships_match_a_duckdb_run(settings: ProjectSettings) -> None:
    from segments_support import build_store

    segs = [parse_segment(r) for r in RULES]
    duck = build_store(settings, fixed_events(), fixed_traits())
    saved = build_store(settings, fixed_events(), fixed_traits())
    for as_of in (AS_OF, AS_OF + timedelta(days=45)):  # two runs: entries, then exits
        report = compute_segments(duck, settings, segs, as_of)
        sets = {s.name: members(duck, s.name) for s in segs}
        frame = pd.DataFrame(
            [(name, pid) for name, pids in sets.items() for pid in sorted(pids)],
            columns=["segment", "profile_id"],
        )
        mirror = save_memberships(saved, segs, frame, as_of)
        assert [(r.name, r.size, r.entered, r.exited) for r in mirror.runs] == [
            (r.name, r.size, r.entered, r.exited) for r in report.runs
        ]
        for s in segs:
            assert members(saved, s.name) == sets[s.name]
    assert history(saved) == history(duck)
    assert any(row[2] == "exited" for row in history(saved))  # the second run had exits
    sizes = "SELECT name, size, status FROM segments ORDER BY name"
    assert saved.rows(sizes) == duck.rows(sizes)


def test_bad_memberships_are_refused(settings: ProjectSettings) -> None:
    from segments_support import build_store

    segs = [parse_segment(r) for r in RULES[:1]]
    store = build_store(settings, fixed_events(), fixed_traits())
    with pytest.raises(ConfigError, match="lack the columns"):
        save_memberships(store, segs, pd.DataFrame({"segment": ["viewers"]}), AS_OF)
    with pytest.raises(ConfigError, match="not defined"):
        frame = pd.DataFrame({"segment": ["ghosts"], "profile_id": ["p1"]})
        save_memberships(store, segs, frame, AS_OF)
    with pytest.raises(ConfigError, match="not in this store's profiles"):
        frame = pd.DataFrame({"segment": ["viewers"], "profile_id": ["somebody-else"]})
        save_memberships(store, segs, frame, AS_OF)
    assert store.scalar("SELECT count(*) FROM memberships") == 0
    # a segment nobody qualifies for is written empty (min-size guard applies as usual)
    empty = pd.DataFrame({"segment": [], "profile_id": []})
    report = save_memberships(store, segs, empty, AS_OF, min_size=1)
    assert report.runs[0].size == 0 and report.warnings
