"""Validate a collected event in Python at acknowledgement time, the way the import will.

The import (:mod:`microseg.ingest.pipeline`) is the source of truth: it validates in SQL,
quarantines, deduplicates and stores. To make an acknowledged event count in real-time
segments at once — not ~200 ms later when its spool segment has been imported —
:class:`FastValidator` reproduces the import's mapping, typing and checks for the plain
shape HTTP clients send (canonical field names, ISO-8601 timestamps, JSON scalars) and
answers with the row the import will store. Anything it is not certain about (aliases,
unusual timestamp formats, values whose cast the SQL might do differently, an erased
subject...) gets ``None``: that event simply waits for the import. The real-time bridge
reconciles the rare disagreement when the import commits (see ``RealtimeBridge``).
"""

from __future__ import annotations

import hashlib
import re
import threading
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from microseg.config.models import ProjectSettings
from microseg.config.sources import EVENT_FIELDS
from microseg.ingest.identity_keys import ID_COLUMNS
from microseg.privacy.crypto import KeyRing, normalise_email
from microseg.privacy.markers import marker

# What DuckDB's trim() strips (Unicode space separators, Zs) -- not tabs or newlines.
SPACES = "".join(c for c in map(chr, range(0x3001)) if unicodedata.category(c) == "Zs")
_DATE_TIME = r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?"
_WITH_OFFSET = re.compile(_DATE_TIME + r"(?:Z|[+-]\d{2}:\d{2}| UTC)")
_NAIVE = re.compile(_DATE_TIME)
_INTEGER = re.compile(r"-?\d{1,18}")
_NUMBER = re.compile(r"-?\d{1,15}(?:\.\d{1,15})?")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+", re.ASCII)
_UNSURE = object()


def profile_id_for_new_key(id_key: str) -> str:
    """The profile id the import gives a key first seen on its own (see identity_keys)."""
    return "p_" + hashlib.md5(id_key.encode()).hexdigest()[:20]


class FastValidator:
    """``check(item, now)`` -> the stored-event row of a valid event, or None (ask the import)."""

    def __init__(
        self, settings: ProjectSettings, keys: KeyRing, markers: Iterable[str] = ()
    ) -> None:
        tax = settings.taxonomy
        self.keys = keys
        self.props = tax.property_columns()
        self.known = {*EVENT_FIELDS, *self.props}
        self.blocked = {v.lower() for v in settings.identity.blocked_values}
        self.event_types = None if tax.allow_unknown_events else set(tax.events)
        self.type_synonyms = tax.synonyms("event_type")
        self.skew = timedelta(minutes=settings.ingest.max_future_skew_minutes)
        self.oldest = datetime.fromisoformat(settings.ingest.min_timestamp)
        self.utc_default = settings.ingest.default_timezone == "UTC"
        # event type -> property -> (base, required, enum, min, max, pattern, synonyms)
        self.declared: dict[str, dict[str, tuple[Any, ...]]] = {}
        for event, spec in tax.events.items():
            rules = self.declared.setdefault(event, {})
            for prop, pspec in spec.properties.items():
                c = tax.effective(pspec)
                pattern = re.compile(c.pattern) if c.pattern else None
                synonyms = tax.synonyms(c.taxonomy) if c.taxonomy else {}
                rules[prop] = (self.props[prop], pspec.required, c.enum, c.min, c.max, pattern)
                rules[prop] += (synonyms,)
        self._nulls = dict.fromkeys(self.props)
        self._lock = threading.Lock()
        self._markers: frozenset[str] = frozenset(markers)

    # -- erasure markers --------------------------------------------------------------------
    def set_markers(self, markers: Iterable[str]) -> None:
        """The erasure markers to refuse (reloaded after every erasure)."""
        with self._lock:
            self._markers = frozenset(markers)

    # -- the check --------------------------------------------------------------------------
    def check(self, item: Any, now: datetime) -> dict[str, Any] | None:
        """The row the import will store for ``item`` (naive-UTC ``ts``), or None."""
        if not isinstance(item, dict) or not self._plain_keys(item):
            return None
        event_id = _text(item.get("event_id"))
        etype = _text(item.get("event_type"))
        if not isinstance(event_id, str) or not isinstance(etype, str):
            return None
        if not etype.isascii():  # DuckDB's and Python's lower() differ beyond ASCII
            return None
        etype = etype.lower()
        etype = self.type_synonyms.get(etype, etype)
        if self.event_types is not None and etype not in self.event_types:
            return None
        ts = self._timestamp(item.get("timestamp"), now)
        if ts is None:
            return None
        row: dict[str, Any] = {"event_id": event_id, "event_type": etype, "ts": ts}
        for field in ("user_id", "anonymous_id", "device_id"):
            value = self._identity(item.get(field))
            if value is _UNSURE:
                return None
            row[field] = value
        email = self._identity(item.get("email"))
        token_in = _text(item.get("email_token"))
        session = _text(item.get("session_id"))
        if email is _UNSURE or token_in is _UNSURE or session is _UNSURE:
            return None
        if email is not None:
            email = str(email)
            if not email.isascii():
                return None
            email = email.lower()
            if not _EMAIL.fullmatch(email):
                return None
            row["email_token"] = self.keys.token(normalise_email(email))
        else:
            row["email_token"] = token_in
        row["session_id"] = session
        key = next((f"{kind}:{row[col]}" for kind, col in ID_COLUMNS if row[col] is not None), None)
        if key is None or self._erased(row):
            return None
        row["id_key"] = key
        row.update(self._nulls)  # properties other event types declare
        for prop, rule in self.declared.get(etype, {}).items():
            value = item.get(prop)
            if value is None:  # absent: stays None unless required (then the import decides)
                if rule[1]:
                    return None
                continue
            value = _typed(value, rule)
            if value is _UNSURE:
                return None
            row[prop] = value
        return row

    def _plain_keys(self, item: Mapping[str, Any]) -> bool:
        """Only canonical names (the import also maps e.g. 'User_ID' case-insensitively)."""
        for k in item:
            if not isinstance(k, str) or (k not in self.known and k.lower() in self.known):
                return False
        return True

    def _timestamp(self, value: Any, now: datetime) -> datetime | None:
        text = _text(value)
        if not isinstance(text, str):
            return None
        if _WITH_OFFSET.fullmatch(text):
            if not _offset_in_use(text):
                return None  # the import quarantines '+99:00', '+12:75', '-13:00'
            try:
                aware = datetime.fromisoformat(text.replace(" UTC", "+00:00"))
            except ValueError:
                return None
            ts = aware.astimezone(UTC).replace(tzinfo=None)
        elif self.utc_default and _NAIVE.fullmatch(text):
            try:
                ts = datetime.fromisoformat(text)
            except ValueError:
                return None
        else:
            return None
        if ts > now + self.skew or ts < self.oldest:
            return None  # the import quarantines it
        return ts

    def _identity(self, value: Any) -> Any:
        text = _text(value)
        if isinstance(text, str) and text.lower() in self.blocked:
            return None
        return text

    def _erased(self, row: Mapping[str, Any]) -> bool:
        markers = self._markers
        if not markers:
            return False
        return any(
            row[col] is not None and marker(self.keys, f"{kind}:{row[col]}") in markers
            for kind, col in ID_COLUMNS
        )


def _offset_in_use(text: str) -> bool:
    """Whether a '+hh:mm' / '-hh:mm' ending is an offset in use (-12:00..+14:00, mm < 60),
    the range the import accepts; 'Z' and ' UTC' endings are. ``text`` matched
    ``_WITH_OFFSET``, so it ends in one of the three (sliced: a regex search costs 3x)."""
    sign = text[-6]
    if sign not in "+-" or text[-3] != ":":
        return True
    hours, minutes = int(text[-5:-3]), int(text[-2:])
    total = hours * 60 + minutes
    return minutes < 60 and total <= (14 * 60 if sign == "+" else 12 * 60)


def _text(value: Any) -> Any:
    """What json_extract_string + trim + blank-to-null gives, or _UNSURE for odd values."""
    if type(value) is str:  # the common case first (a str subclass takes the slow path)
        return value.strip(SPACES) or None
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value.strip(SPACES) or None
    return _UNSURE


def _typed(value: Any, rule: tuple[Any, ...]) -> Any:
    """A declared property's stored value (None when absent), or _UNSURE."""
    base, required, enum, low, high, pattern, synonyms = rule
    if value is None or (isinstance(value, str) and not value.strip(SPACES)):
        return _UNSURE if required else None
    typed: Any
    if base == "string":
        text = _text(value)
        if not isinstance(text, str):
            return _UNSURE
        if synonyms and not text.isascii():
            return _UNSURE
        typed = synonyms.get(text.lower(), text) if synonyms else text
        if pattern is not None and not pattern.fullmatch(typed):
            return _UNSURE
    elif base == "boolean":
        if isinstance(value, bool):
            typed = value
        elif isinstance(value, str) and value.strip(SPACES).lower() in {"true", "false"}:
            typed = value.strip(SPACES).lower() == "true"
        else:
            return _UNSURE
    elif base == "integer":
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**18:
            typed = value
        elif isinstance(value, str) and _INTEGER.fullmatch(value.strip(SPACES)):
            typed = int(value.strip(SPACES))
        else:
            return _UNSURE
    elif base == "number":  # NaN / infinities fail abs() < 1e15 (non_finite_number)
        if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 1e15:
            typed = float(value)
        elif isinstance(value, str) and _NUMBER.fullmatch(value.strip(SPACES)):
            typed = float(value.strip(SPACES))
        else:
            return _UNSURE
    else:  # timestamps and other bases: the SQL cast decides
        return _UNSURE
    if enum and not _in_enum(typed, enum):
        return _UNSURE
    numeric = isinstance(typed, int | float) and not isinstance(typed, bool)
    if numeric and ((low is not None and typed < low) or (high is not None and typed > high)):
        return _UNSURE
    return typed


def _in_enum(value: Any, enum: list[Any]) -> bool:
    if isinstance(value, str):
        return value in [v for v in enum if isinstance(v, str)]
    return any(not isinstance(v, str | bool) and float(v) == float(value) for v in enum)
