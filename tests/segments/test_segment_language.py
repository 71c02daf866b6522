"""The definition language: parsing, located errors, did-you-mean, cycles, round trip, golden SQL."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from segments_support import AS_OF, build_store

from microseg.config.yamlio import load_document
from microseg.errors import DefinitionError
from microseg.segments import (
    Catalog,
    check_all,
    compile_segment,
    dump_segment,
    parse_segment,
    preview,
    realtime_report,
)
from microseg.segments.ast import Segment, to_dict
from microseg.segments.parse import load_segment, validate_segment_file
from microseg.store import sql


def test_yaml_errors_carry_file_line_and_cause(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("name: bad\nrule:\n  all:\n    - trait: age\n      gte: 3\n    - evnt: purchase\n")
    with pytest.raises(DefinitionError) as err:
        load_segment(f)
    p = err.value.problems[0]
    assert p.line == 6 and "not a condition" in p.message and p.file and p.file.endswith("bad.yaml")


def test_unknown_field_did_you_mean(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("name: s\nrule:\n  event: purchase\n  lst: 30d\n")
    with pytest.raises(DefinitionError) as err:
        load_segment(f)
    assert "did you mean 'last'" in str(err.value) and err.value.problems[0].line == 4


@pytest.mark.parametrize("key", ["[", "a[0]", "rule["])
def test_an_unknown_key_with_a_bracket_is_named_not_a_crash(key: str) -> None:
    # found by schemathesis: {"[": null} as a preview body was a 500 (IndexError)
    with pytest.raises(DefinitionError) as err:
        parse_segment({"name": "s", "rule": {"event": "purchase"}, key: None})
    assert f"unknown field '{key}'" in str(err.value)


def test_bad_values_refused() -> None:
    for bad, msg in [
        ({"event": "purchase", "last": "30 days"}, "duration"),
        ({"trait": "age", "gt": 1, "lt": 5}, "exactly one"),
        ({"first": "a", "within": "1h"}, "then"),
        ({"geo": {"radius": "1 parsec", "lat": 1, "lon": 2}}, "distance"),
        ({"bucket": {"salt": "x", "range": [5, 500]}}, "bucket range"),
        ({"trait": "x", "regex": "("}, "regular expression"),
    ]:
        with pytest.raises(DefinitionError, match=msg):
            parse_segment({"name": "s", "rule": bad})


def test_names_checked_with_did_you_mean(settings: Any, tmp_path: Path) -> None:
    store = build_store(
        settings,
        [],
        [
            {
                "profile_id": "a",
                "age": 3,
                "urban": True,
                "dominant_device": "x",
                "monetary": 1.0,
                "latitude": None,
                "longitude": None,
                "postal_code": None,
                "interest_tags": None,
                "engagement_score": None,
            }
        ],
    )
    cat = Catalog.from_store(store, settings)
    cases = [
        ({"event": "purchse"}, "unknown event type 'purchse' (did you mean 'purchase'?)"),
        ({"event": "purchase", "where": {"revenu": 3}}, "did you mean 'revenue'?"),
        ({"trait": "monetry", "gt": 1}, "unknown trait 'monetry' (did you mean 'monetary'?)"),
        ({"segment": "other_segmnt"}, "did you mean 'other_segment'?"),
        ({"geo": {"store": "dowtown", "radius": "1mi"}}, "unknown store 'dowtown'"),
        (
            {
                "first": "add_to_cart",
                "not_then": "purchase",
                "then_where": {"priec": 1},
                "within": "1h",
            },
            "did you mean 'price'?",
        ),
    ]
    other = parse_segment({"name": "other_segment", "rule": {"trait": "age", "gt": 1}})
    for rule, msg in cases:
        seg = parse_segment({"name": "s", "rule": rule})
        with pytest.raises(DefinitionError) as err:
            check_all({"s": seg, "other_segment": other}, cat)
        assert msg in str(err.value)


def test_validate_file_locates_unknown_names(settings: Any, tmp_path: Path) -> None:
    class Project:
        root = tmp_path

    Project.settings = settings  # type: ignore[attr-defined]
    (tmp_path / "segments").mkdir()
    f = tmp_path / "segments" / "a.yaml"
    f.write_text("name: a\nrule:\n  any:\n    - event: purchase\n    - event: add_to_crt\n")
    with pytest.raises(DefinitionError) as err:
        validate_segment_file(load_document(f), Project())
    p = err.value.problems[0]
    assert (p.line, "did you mean 'add_to_cart'?" in p.message) == (5, True)


def test_cycles_are_refused() -> None:
    a = parse_segment({"name": "a", "rule": {"segment": "b"}})
    b = parse_segment({"name": "b", "rule": {"not": {"segment": "c"}}})
    c = parse_segment({"name": "c", "rule": {"all": [{"segment": "a"}]}})
    with pytest.raises(DefinitionError, match="cycle: a -> b -> c -> a"):
        check_all({"a": a, "b": b, "c": c}, Catalog(check_events=False))


def test_realtime_report_names_batch_only_parts() -> None:
    seg = parse_segment(
        {
            "name": "s",
            "rule": {
                "all": [
                    {"trait": "monetary", "gte": {"quantile": 0.9}},
                    {"event": "purchase", "last": "7d"},
                ]
            },
        }
    )
    rep = realtime_report(seg, {})
    assert rep["eligible"] is False and rep["realtime_events"] == ["purchase"]
    assert "quantile" in rep["batch_only"][0]


# --------------------------------------------------------------------------- golden SQL
GOLDEN = {
    "trait": (
        {"trait": "age", "between": [25, 34]},
        'SELECT "p"."profile_id" FROM "profiles" AS "p" WHERE "p"."merged_into" IS NULL AND '
        '("p"."profile_id" IN (SELECT "t"."profile_id" FROM "traits" AS "t" WHERE "t"."age" '
        "BETWEEN 25 AND 34))",
    ),
    "count_lt": (
        {"event": "purchase", "last": "30d", "lt": 2},
        'SELECT "p"."profile_id" FROM "profiles" AS "p" WHERE "p"."merged_into" IS NULL AND '
        '(NOT "p"."profile_id" IN (SELECT "e"."profile_id" FROM "_ev" AS "e" WHERE '
        '"e"."event_type" IN (\'purchase\') AND "e"."ts" <= CAST(\'2024-06-30 12:00:00\' AS '
        'TIMESTAMP) AND "e"."ts" > CAST(\'2024-05-31 12:00:00\' AS TIMESTAMP) GROUP BY '
        '"e"."profile_id" HAVING NOT COUNT(*) < 2.0))',
    ),
}


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_golden_sql(case: str) -> None:
    rule, expected = GOLDEN[case]
    seg = parse_segment({"name": "s", "rule": rule})
    assert sql.render(compile_segment(seg, AS_OF, events_source="_ev")) == expected


def test_drop_off_sql_shape() -> None:
    seg = parse_segment(
        {"name": "s", "rule": {"first": "add_to_cart", "not_then": "purchase", "within": "24h"}}
    )
    text = sql.render(compile_segment(seg, AS_OF))
    assert "NOT EXISTS" in text and "INTERVAL '86400' SECOND" in text
    assert (
        "\"a\".\"ts\" + INTERVAL '86400' SECOND <= CAST('2024-06-30 12:00:00' AS TIMESTAMP)" in text
    )


def test_injection_in_names_and_values_is_inert(settings: Any) -> None:
    store = build_store(
        settings,
        [
            {
                "profile_id": "x",
                "event_type": "purchase",
                "ts": AS_OF,
                "category": "a'; DROP TABLE events; --",
            }
        ],
        profiles=["y"],
    )
    evil = "a'; DROP TABLE events; --"
    seg = parse_segment(
        {
            "name": "s",
            "rule": {
                "any": [
                    {"event": "purchase", "where": {"category": evil}},
                    {"consent": "x') OR 1=1 --"},
                    {"bucket": {"salt": "'); DROP TABLE profiles; --", "range": [0, 1], "of": 100}},
                ]
            },
        }
    )
    ids = [r[0] for r in store.rows(compile_segment(seg, AS_OF))]
    assert ids == ["x"]
    assert store.scalar("SELECT count(*) FROM events") == 1
    weird = parse_segment(
        {"name": "s", "rule": {"trait": 'age" FROM traits; DROP TABLE profiles; --', "eq": 1}}
    )
    store.execute("CREATE TABLE traits (profile_id VARCHAR)")
    with pytest.raises(duckdb.BinderException, match=r"not found"):
        store.rows(compile_segment(weird, AS_OF))
    assert store.table_exists("profiles")


def test_preview_warns_below_minimum(settings: Any) -> None:
    store = build_store(
        settings, [{"profile_id": "x", "event_type": "purchase", "ts": AS_OF}], profiles=["y", "z"]
    )
    seg = parse_segment({"name": "s", "min_size": 5, "rule": {"event": "purchase"}})
    p = preview(store, seg, AS_OF, settings=settings)
    assert (p.size, p.population, p.sample) == (1, 3, ["x"])
    assert "below the minimum of 5" in p.warnings[0]


# --------------------------------------------------------------------------- round trip
names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
scalars = st.one_of(
    st.integers(-1000, 1000),
    st.booleans(),
    names,
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)
durations = st.builds(lambda n, u: f"{n}{u}", st.integers(1, 500), st.sampled_from("smhdw"))
ops = st.one_of(
    st.builds(lambda v: {"eq": v}, scalars),
    st.builds(lambda v: {"gte": v}, st.integers(0, 100)),
    st.builds(lambda v: {"in": v}, st.lists(scalars, min_size=1, max_size=3)),
    st.builds(lambda v: {"exists": v}, st.booleans()),
    st.builds(lambda q: {"lt": {"quantile": q}}, st.floats(0, 1)),
    st.builds(lambda a, b: {"between": [a, b]}, st.integers(0, 10), st.integers(10, 20)),
)
leaves = st.one_of(
    st.builds(lambda n, o: {"trait": n, **o}, names, ops),
    st.builds(
        lambda e, d, n: {"event": e, "last": d, "gt": n}, names, durations, st.integers(0, 9)
    ),
    st.builds(
        lambda e, w, s: {"event": e, "where": {"p": w}, "per_session": True, "same": s},
        names,
        scalars,
        st.lists(names, max_size=2),
    ),
    st.builds(lambda a, b, d: {"first": a, "not_then": [b], "within": d}, names, names, durations),
    st.builds(lambda a, d: {"recency": a, "older_than": d, "or_never": True}, names, durations),
    st.builds(
        lambda r: {"geo": {"lat": 1.5, "lon": -3.25, "radius": f"{r}km"}}, st.integers(1, 50)
    ),
    st.builds(lambda c: {"postal_code": c}, st.lists(names, min_size=1, max_size=3)),
    st.builds(lambda p: {"consent": p}, names),
    st.builds(lambda s: {"segment": s}, names),
    st.builds(
        lambda s, lo: {"bucket": {"salt": s, "range": [lo, lo + 5]}}, names, st.integers(0, 90)
    ),
    st.builds(
        lambda e: {
            "event": e,
            "since": datetime(2024, 1, 1).isoformat(),
            "until": datetime(2024, 2, 1).isoformat(),
        },
        names,
    ),
)
conditions = st.recursive(
    leaves,
    lambda kids: st.one_of(
        st.builds(lambda xs: {"all": xs}, st.lists(kids, min_size=1, max_size=3)),
        st.builds(lambda xs: {"any": xs}, st.lists(kids, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, kids),
    ),
    max_leaves=8,
)


@given(rule=conditions, fmt=st.sampled_from(["yaml", "json"]))
@hsettings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_parse_print_parse_round_trip(rule: dict[str, Any], fmt: str) -> None:
    seg = parse_segment({"name": "s", "rule": rule})
    text = dump_segment(seg, fmt)
    again = parse_segment(text)
    assert again == seg
    assert to_dict(again) == to_dict(seg)
    assert isinstance(again, Segment)
