"""Hypothesis strategies for hostile events, with the outcome each one must have.

Every generated item is a ``Case``: the JSON value sent and ``expect``, the quarantine reason
the pipeline must give it (``None``: a valid event that must be stored; ``"*"``: hostile but
tolerable input, e.g. NUL or emoji text, extra or nested fields — it may be stored or
quarantined, but never crash anything and never be counted twice).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

NOW = datetime.now(UTC)
ANY = "*"
REASONS = frozenset(
    {
        "malformed_json",
        "missing_event_id",
        "missing_event_type",
        "unknown_event_type",
        "missing_timestamp",
        "invalid_timestamp",
        "non_finite_number",
        "future_timestamp",
        "timestamp_too_old",
        "missing_identity",
        "invalid_email",
        "missing_property",
        "invalid_type",
        "not_in_enum",
        "below_minimum",
        "above_maximum",
        "pattern_mismatch",
        "malformed_row",
        "invalid_encoding",
        "unencodable",
        "event_too_large",
    }
)
EVENT_TYPES = ("page_view", "product_view", "add_to_cart", "purchase", "video_played")


@dataclass(frozen=True)
class Case:
    item: Any
    expect: str | None  # reason code, None (valid) or ANY

    @property
    def event_id(self) -> str | None:
        if isinstance(self.item, dict) and isinstance(self.item.get("event_id"), str):
            return str(self.item["event_id"])
        return None


# Text that stresses encodings: NUL and control characters, quotes, emoji, RTL, combining.
hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(
        alphabet=st.sampled_from("\x00\x01\x7f'\"\\;%_-\u2019\u202e\U0001f600é\u0301 \t\n"),
        max_size=30,
    ),
    st.sampled_from(
        ["'; DROP TABLE events; --", '" OR 1=1 --', "{{7*7}}", "\\x00", "%s%n", "ʼ OR ʼ1"]
    ),
)
json_junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | hostile_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(hostile_text, children, max_size=3)
    ),
    max_leaves=8,
)


def ts(minutes_ago: float) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).isoformat()


@st.composite
def valid_event(draw: st.DrawFn, ids: st.SearchStrategy[str]) -> dict[str, Any]:
    """A valid event of a declared type with correctly typed properties."""
    event_type = draw(st.sampled_from(EVENT_TYPES))
    ev: dict[str, Any] = {
        "event_id": draw(ids),
        "event_type": event_type,
        "timestamp": ts(draw(st.floats(1, 60 * 24 * 300))),
        "user_id": "u" + str(draw(st.integers(0, 50))),
    }
    if event_type in ("product_view", "add_to_cart", "purchase"):
        ev["price"] = draw(st.floats(0, 1e6) | st.integers(0, 10**6))
        ev["product_id"] = draw(st.text(min_size=1, max_size=10))
    if event_type == "video_played":
        ev["percent_watched"] = draw(st.floats(0, 100))
    if event_type == "page_view":
        ev["url"] = draw(hostile_text)
    return ev


def _drop(key: str) -> Any:
    return lambda ev, _draw: {k: v for k, v in ev.items() if k != key}


def _set(key: str, strategy: st.SearchStrategy[Any]) -> Any:
    return lambda ev, draw: {**ev, key: draw(strategy)}


not_a_date = st.one_of(
    st.text(alphabet="abcxyz!?# ", min_size=1, max_size=20).filter(lambda s: s.strip()),
    st.integers(0, 2**40),
    st.sampled_from(["2026-13-45", "2026-02-30T10:00:00", "31/12/2020 25:61", "yesterday"]),
)
# mutation -> (how to apply it, the reason the pipeline must give)
MUST_REFUSE: dict[str, tuple[Any, str]] = {
    "no_event_id": (_drop("event_id"), "missing_event_id"),
    "blank_event_id": (_set("event_id", st.sampled_from(["", "  "])), "missing_event_id"),
    "null_event_id": (_set("event_id", st.none()), "missing_event_id"),
    "no_event_type": (_drop("event_type"), "missing_event_type"),
    "unknown_event_type": (
        _set("event_type", st.text(min_size=1, max_size=20).map(lambda s: "zz_" + s)),
        "unknown_event_type",
    ),
    "no_timestamp": (_drop("timestamp"), "missing_timestamp"),
    "bad_timestamp": (_set("timestamp", not_a_date), "invalid_timestamp"),
    "future_timestamp": (
        _set("timestamp", st.floats(60, 1e6).map(lambda m: ts(-m))),
        "future_timestamp",
    ),
    "ancient_timestamp": (
        _set("timestamp", st.sampled_from(["1900-01-01T00:00:00Z", "1989-12-31T23:00:00Z"])),
        "timestamp_too_old",
    ),
    "no_identity": (_drop("user_id"), "missing_identity"),
    "bad_email": (
        lambda ev, draw: {
            **{k: v for k, v in ev.items() if k != "user_id"},
            "email": draw(st.text(alphabet="abc .-", min_size=1, max_size=15).filter(str.strip)),
        },
        "invalid_email",
    ),
}
# Mutations that need a typed property: applied to a purchase / video event.
MUST_REFUSE_TYPED: dict[str, tuple[str, Any, str]] = {
    "price_not_number": (
        "purchase",
        st.text(alphabet="abcxyz", min_size=1, max_size=8).filter(
            lambda s: s.lower() not in {"nan", "inf", "infinity"}
        ),
        "invalid_type",
    ),
    "price_is_object": (
        "purchase",
        st.dictionaries(st.text(max_size=3), st.integers(), min_size=1, max_size=2),
        "invalid_type",
    ),
    "price_negative": ("purchase", st.floats(-1e9, -0.001), "below_minimum"),
    "percent_over_100": ("video_played", st.floats(100.5, 1e9), "above_maximum"),
}
TOLERATED: dict[str, Any] = {
    "extra_fields": lambda ev, draw: {
        **ev,
        **draw(st.dictionaries(st.text(max_size=8), json_junk, max_size=4)),
    },
    "nested_string_prop": _set("url", json_junk),
    "hostile_user_id": _set("user_id", hostile_text.filter(lambda s: s.strip())),
    "hostile_event_id": _set("event_id", hostile_text),
    "numeric_user_id": _set(
        "user_id", st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.booleans()
    ),
    "odd_timestamp": _set(
        "timestamp",
        st.sampled_from(
            [
                "2026-01-01",
                "2026-01-01 10:00",
                "2026-01-01T00:00:00+14:00",
                "2025-06-01T00:00:00.123456789Z",
            ]
        ),
    ),
    "huge_string": _set("url", st.integers(10, 100_000).map(lambda n: "x" * n)),
}


@st.composite
def case(draw: st.DrawFn, ids: st.SearchStrategy[str]) -> Case:
    """One item of a batch: valid, must-refuse, tolerated, or not an object at all."""
    kind = draw(st.sampled_from(["valid", "valid", "refuse", "refuse_typed", "tolerated", "junk"]))
    if kind == "junk":
        item = draw(st.none() | st.integers() | hostile_text | st.lists(json_junk, max_size=3))
        return Case(item, "malformed_json")
    ev = draw(valid_event(ids))
    if kind == "valid":
        return Case(ev, None)
    if kind == "refuse":
        name = draw(st.sampled_from(sorted(MUST_REFUSE)))
        apply, reason = MUST_REFUSE[name]
        return Case(apply(ev, draw), reason)
    if kind == "refuse_typed":
        name = draw(st.sampled_from(sorted(MUST_REFUSE_TYPED)))
        event_type, strategy, reason = MUST_REFUSE_TYPED[name]
        prop = "percent_watched" if event_type == "video_played" else "price"
        ev = {k: v for k, v in ev.items() if k not in ("price", "percent_watched", "url")}
        return Case({**ev, "event_type": event_type, prop: draw(strategy)}, reason)
    name = draw(st.sampled_from(sorted(TOLERATED)))
    return Case(TOLERATED[name](ev, draw), ANY)
