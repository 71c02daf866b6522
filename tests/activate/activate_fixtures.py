"""Fixtures for delivery tests: a store, keys, a controllable clock and consent rows.

Imported by name into each test module (a uniquely named module instead of a
``conftest.py``, so it never shadows another area's ``from conftest import ...``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest

from microseg.privacy.crypto import KeyRing
from microseg.store import Store

__all__ = ["Clock", "clock", "grant", "keys", "store"]


class Clock:
    """A settable naive-UTC clock."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture()
def store() -> Iterator[Store]:
    s = Store(None)
    yield s
    s.close()


@pytest.fixture()
def keys() -> KeyRing:
    return KeyRing.generate()


@pytest.fixture()
def clock() -> Clock:
    return Clock(datetime(2026, 3, 2, 15, 0))  # a Monday, 15:00 UTC


@pytest.fixture()
def grant(store: Store) -> Callable[..., None]:
    """Record a consent row: grant(profile_id, purpose, granted=True, at=None, expires_at=None)."""

    def _grant(
        profile_id: str,
        purpose: str,
        granted: bool = True,
        at: datetime | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        store.execute(
            "INSERT INTO consents VALUES (?, ?, ?, 'test', ?, ?)",
            [profile_id, purpose, granted, at or datetime(2026, 1, 1), expires_at],
        )

    return _grant
