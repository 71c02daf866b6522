"""The acknowledgement-time validator agrees with the import on every event it accepts.

Hypothesis draws batches of events mixing valid and broken fields (odd timestamps, blocked
ids, emails, wrong types, synonyms, constraints); each batch is imported through the real
pipeline. Every event :class:`FastValidator` accepts must be stored, with exactly the row
the validator predicted (typed values, naive-UTC time, email token, id key, profile id).
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microseg.api.fastcheck import FastValidator, profile_id_for_new_key
from microseg.config.models import ProjectSettings
from microseg.config.sources import SourceSpec
from microseg.privacy.markers import marker
from microseg.store import utcnow
from microseg.workspace import Workspace

NOW = datetime.now(UTC).replace(microsecond=0)
QUIZ = {
    "properties": {
        "score": {"type": "integer", "min": 0, "max": 10},
        "passed": "boolean",
        "level": {"type": "string", "enum": ["easy", "hard"]},
        "code": {"type": "string", "pattern": "[A-Z]{3}", "required": True},
    }
}


def quiz_settings(root: Path) -> ProjectSettings:
    """The template project's settings plus a 'quiz' event with every kind of constraint."""
    with Workspace.init(root / "template") as base:
        data = base.settings.model_dump(exclude_none=True)
    data["taxonomy"]["events"]["quiz"] = QUIZ
    return ProjectSettings.model_validate(data)


def ts(delta: timedelta) -> datetime:
    return NOW + delta


TIMESTAMPS = st.sampled_from(
    [
        ts(-timedelta(minutes=3)).isoformat().replace("+00:00", "Z"),
        ts(-timedelta(hours=2)).isoformat(),
        ts(-timedelta(hours=5)).astimezone().isoformat(),
        (ts(-timedelta(minutes=1)).replace(tzinfo=None)).isoformat(sep=" "),
        ts(-timedelta(seconds=7)).strftime("%Y-%m-%dT%H:%M:%S.123+05:30"),
        ts(-timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S UTC"),
        ts(-timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S.1234567Z"),
        ts(timedelta(hours=3)).isoformat(),  # future
        "1985-01-01T00:00:00Z",  # too old
        "2026-13-01T00:00:00Z",
        "yesterday",
        "",
        1_700_000_000,
        ts(-timedelta(minutes=9)).strftime("%Y-%m-%dT%H:%M:%S+0200"),
        ts(-timedelta(minutes=9)).strftime("%Y-%m-%dT%H:%M"),
        # offsets: the import accepts -12:00 .. +14:00 with minutes < 60 only
        ts(-timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M:%S+99:00"),
        ts(-timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M:%S-25:00"),
        ts(-timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M:%S+12:75"),
        ts(-timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M:%S+14:30"),
        ts(-timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M:%S+23:00"),
        ts(-timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M:%S-13:00"),
        ts(-timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M:%S-12:30"),
        ts(-timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M:%S+14:00"),
        ts(-timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M:%S-12:00"),
        ts(-timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M:%S.5+13:59"),
        ts(-timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M:%S+05:30:00"),
    ]
)
RAW_INF = "__raw_1e999__"  # written as the bare JSON number 1e999 (parsed: infinity)
IDS = st.sampled_from([None, "u1", "u2", " u3 ", "undefined", "", "0", 42, True, "Ü-9", "u\t4"])
EMAILS = st.sampled_from(
    [None, "a@example.com", " B@Example.COM ", "not-an-email", "x y@z.io", "ünï@code.de"]
)
TYPES = st.sampled_from(
    [
        "page_view",
        "PAGE_VIEW",
        " product_view ",
        "view",
        "add_to_cart",
        "purchase",
        "quiz",
        "store_visit",
        "nope",
        "",
        None,
        7,
    ]
)
VALUES = st.sampled_from(
    [
        *(None, 12.5, "12.5", "abc", -1, 0, 3, "4", 2.0, True, "true", "FALSE", "", " x "),
        *(10**17, 1e300, float("nan"), float("inf"), -float("inf"), "NaN", "Infinity"),
        *("-inf", "1e999", RAW_INF),
    ]
)
STRINGS = st.sampled_from(
    [None, "ABC", "abc", "easy", "hard", "NYC", "ny", " Paris ", 17, "", "ÄBC"]
)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    item: dict[str, Any] = {"event_type": draw(TYPES), "timestamp": draw(TIMESTAMPS)}
    for field, strategy in (
        ("user_id", IDS),
        ("anonymous_id", IDS),
        ("email", EMAILS),
        ("session_id", st.sampled_from([None, "s1", " s2 "])),
        ("price", VALUES),
        ("quantity", VALUES),
        ("score", VALUES),
        ("passed", VALUES),
        ("level", STRINGS),
        ("code", STRINGS),
        ("region", STRINGS),
        ("category", STRINGS),
    ):
        value = draw(strategy)
        if value is not None or draw(st.booleans()):
            item[field] = value
    if draw(st.integers(0, 20)) == 0:
        item["User_Id"] = "shadow"  # a case variant the import maps too
    return item


COUNTER = itertools.count()


def json_line(item: dict[str, Any]) -> str:
    """One JSON Lines line: NaN / Infinity as JSON5-style literals (DuckDB's JSON reads
    them), RAW_INF as the bare number 1e999."""
    return json.dumps(item, ensure_ascii=False).replace(f'"{RAW_INF}"', "1e999")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Any:
    ws = Workspace.ephemeral(quiz_settings(tmp_path_factory.mktemp("tpl")))
    yield ws
    ws.close()


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(events(), min_size=1, max_size=30))
def test_every_accepted_event_is_stored_as_predicted(
    workspace: Workspace, tmp_path_factory: pytest.TempPathFactory, batch: list[dict[str, Any]]
) -> None:
    ws = workspace
    run = next(COUNTER)
    for i, item in enumerate(batch):
        item["event_id"] = f"r{run}-{i}"
    validator = FastValidator(ws.settings, ws.keys)
    now = utcnow()
    lines = [json_line(it) for it in batch]
    items = [json.loads(line) for line in lines]  # what a JSON parser hands the validator
    predicted = {it["event_id"]: row for it in items if (row := validator.check(it, now))}
    known = dict(ws.store.rows("SELECT id_key, profile_id FROM identities"))
    path = tmp_path_factory.mktemp("fast") / f"batch{run}.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    ws.import_events(path, spec=SourceSpec(format="jsonl"))
    cur = ws.store.execute(
        "SELECT e.*, i.profile_id FROM events e JOIN identities i ON i.id_key = e.id_key"
        " WHERE e.source = ?",
        [path.name],
    )
    names = [d[0] for d in cur.description]
    stored = {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}
    for eid, row in predicted.items():
        assert eid in stored, f"accepted {eid} but the import did not store it"
        got = stored[eid]
        for column, value in row.items():
            if column == "session_id" and value is None:
                continue  # computed by the import (the bridge holds back per-session types)
            assert got[column] == value, (eid, column, value, got[column])
        # the profile the bridge predicts: the key's known profile, else the new-key id
        expected = known.get(row["id_key"]) or profile_id_for_new_key(row["id_key"])
        assert got["profile_id"] == expected


def test_plain_events_are_accepted(workspace: Workspace) -> None:
    """The fast path is not vacuous: ordinary SDK events pass it."""
    validator = FastValidator(workspace.settings, workspace.keys)
    now = utcnow()
    item = {
        "event_id": "e1",
        "event_type": "add_to_cart",
        "timestamp": (NOW - timedelta(minutes=1)).isoformat(),
        "user_id": "u1",
        "email": "A@Example.com",
        "price": 9.5,
        "quantity": "2",
        "product_id": 17,
    }
    row = validator.check(item, now)
    assert row is not None
    assert row["ts"] == (NOW - timedelta(minutes=1)).replace(tzinfo=None)
    assert row["price"] == 9.5 and row["quantity"] == 2.0 and row["product_id"] == "17"
    assert row["id_key"] == "user_id:u1"
    assert row["email_token"] == workspace.keys.token("a@example.com")
    assert row["url"] is None  # a property of another event type
    # synonyms of event types and master taxonomies are applied
    store = validator.check({**item, "event_type": "cart", "price": 1}, now)
    assert store is not None and store["event_type"] == "add_to_cart"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"event_type": "nope"}, "unknown type"),
        ({"timestamp": (NOW + timedelta(hours=1)).isoformat()}, "future"),
        ({"price": -3}, "below the currency minimum"),
        ({"price": "cheap"}, "not a number"),
        ({"user_id": "undefined", "email": None}, "blocked id and nothing else"),
        ({"email": "broken"}, "invalid email"),
        ({"event_id": None}, "no id (the file decides what the import does)"),
        ({"timestamp": "2026-11-23T10:00"}, "no seconds: left to the SQL cast"),
        ({"price": float("nan")}, "NaN: non_finite_number"),
        ({"price": float("inf")}, "infinity: non_finite_number"),
        ({"price": "Infinity"}, "infinity as text"),
        ({"timestamp": "2026-11-23T10:00:00+12:75"}, "offset minutes >= 60"),
        ({"timestamp": "2026-11-23T10:00:00-12:30"}, "offset west of -12:00"),
        ({"timestamp": "2026-11-23T10:00:00+23:00"}, "offset east of +14:00 (Python accepts)"),
    ],
)
def test_uncertain_or_invalid_events_are_left_to_the_import(
    workspace: Workspace, change: dict[str, Any], why: str
) -> None:
    validator = FastValidator(workspace.settings, workspace.keys)
    item = {
        "event_id": "e1",
        "event_type": "add_to_cart",
        "timestamp": (NOW - timedelta(minutes=1)).isoformat(),
        "user_id": "u1",
        "email": "a@example.com",
        "price": 9.5,
        **change,
    }
    assert validator.check(item, utcnow()) is None, why


def test_erased_subjects_are_left_to_the_import(workspace: Workspace) -> None:
    validator = FastValidator(workspace.settings, workspace.keys)
    item = {
        "event_id": "e1",
        "event_type": "page_view",
        "timestamp": (NOW - timedelta(minutes=1)).isoformat(),
        "anonymous_id": "a1",
        "user_id": "gone",
    }
    assert validator.check(item, utcnow()) is not None
    validator.set_markers([marker(workspace.keys, "user_id:gone")])
    assert validator.check(item, utcnow()) is None
    assert validator.check({**item, "user_id": "other"}, utcnow()) is not None


def test_new_key_profile_ids_match_the_import(workspace: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    item = {
        "event_id": "x1",
        "event_type": "page_view",
        "timestamp": (NOW - timedelta(minutes=1)).isoformat(),
        "anonymous_id": "fresh-visitor",
    }
    path.write_bytes(orjson.dumps(item) + b"\n")
    assert workspace.import_events(path).inserted == 1
    assert workspace.profile_id("anonymous_id:fresh-visitor") == profile_id_for_new_key(
        "anonymous_id:fresh-visitor"
    )
