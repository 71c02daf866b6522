"""Consent ledger (FEATURES G1): per-purpose opt-in / opt-out, append-only, audited.

``consents`` is the history: every grant or revoke is a new row with its time, source and
expiry; nothing is updated. The current decision for a (profile, purpose) is the latest row
(a revoke wins a tie), exposed as the view ``consent_current``. Every reader in the engine
(segment conditions, the send dispatcher's ``StoreConsent``, audience export) reads the same
table, so a change is effective on the very next read. In-process consumers that keep state
in memory (the decision engine, the real-time segment evaluator) subscribe to the
:class:`ConsentRegistry` of the store and hear about each change as it is recorded.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import pandas as pd

from microseg.config.models import ProjectSettings, check_name
from microseg.errors import ConfigError, did_you_mean
from microseg.store import Store, utcnow

log = logging.getLogger(__name__)

Status = Literal["granted", "revoked", "expired", "missing"]


@dataclass(frozen=True)
class ConsentChange:
    """One recorded grant or revoke."""

    profile_id: str
    purpose: str
    granted: bool
    source: str
    recorded_at: datetime
    expires_at: datetime | None
    actor: str


@dataclass(frozen=True)
class ConsentState:
    """The consent decision for one profile and purpose at a point in time."""

    profile_id: str
    purpose: str
    status: Status
    recorded_at: datetime | None = None
    source: str | None = None
    expires_at: datetime | None = None

    @property
    def granted(self) -> bool:
        return self.status == "granted"

    def as_dict(self) -> dict[str, Any]:
        return {
            "purpose": self.purpose,
            "status": self.status,
            "granted": self.granted,
            "recorded_at": self.recorded_at,
            "source": self.source,
            "expires_at": self.expires_at,
        }


Subscriber = Callable[[ConsentChange], None]


class ConsentRegistry:
    """Fan-out of consent changes to in-memory consumers of one store (thread-safe)."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback`` after every recorded change; returns an unsubscribe function."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def publish(self, change: ConsentChange) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(change)
            except Exception:  # one broken consumer must not block the ledger or the others
                log.exception("consent subscriber %r failed", callback)


_REGISTRIES: weakref.WeakKeyDictionary[Store, ConsentRegistry] = weakref.WeakKeyDictionary()
_REGISTRIES_LOCK = threading.Lock()


def consent_registry(store: Store) -> ConsentRegistry:
    """The registry of ``store`` (one per open store)."""
    with _REGISTRIES_LOCK:
        registry = _REGISTRIES.get(store)
        if registry is None:
            registry = _REGISTRIES[store] = ConsentRegistry()
        return registry


def check_purpose(settings: ProjectSettings | None, purpose: str) -> str:
    """A purpose must be lower_snake_case and, when the project declares purposes, declared."""
    try:
        check_name(purpose, "purpose")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    declared = settings.privacy.purposes if settings is not None else []
    if declared and purpose not in declared:
        raise ConfigError(
            f"unknown consent purpose '{purpose}'{did_you_mean(purpose, declared)}"
            f" (declared in microseg.yaml privacy.purposes: {', '.join(declared)})"
        )
    return purpose


def record_consent(
    store: Store,
    profile_id: str,
    purpose: str,
    granted: bool,
    *,
    source: str,
    at: datetime | None = None,
    expires_at: datetime | None = None,
    actor: str = "library",
    settings: ProjectSettings | None = None,
) -> ConsentChange:
    """Append a grant (``granted=True``) or revoke; audited and published at once."""
    check_purpose(settings, purpose)
    if not source:
        raise ConfigError("a consent needs a source (e.g. 'web_form', 'crm', 'support')")
    at = at or utcnow()
    if expires_at is not None and expires_at <= at:
        raise ConfigError(f"expires_at {expires_at} is not after the consent time {at}")
    if not granted:
        expires_at = None
    change = ConsentChange(profile_id, purpose, granted, source, at, expires_at, actor)
    with store.transaction():
        store.execute(
            "INSERT INTO consents VALUES (?, ?, ?, ?, ?, ?)",
            [profile_id, purpose, granted, source, at, expires_at],
        )
        store.audit(
            actor,
            "consent.grant" if granted else "consent.revoke",
            profile_id,
            {"purpose": purpose, "source": source, "at": at, "expires_at": expires_at},
        )
    consent_registry(store).publish(change)
    return change


def _status(granted: bool, expires_at: datetime | None, at: datetime) -> Status:
    if not granted:
        return "revoked"
    if expires_at is not None and expires_at <= at:
        return "expired"
    return "granted"


def consent_state(
    store: Store, profile_id: str, purpose: str, at: datetime | None = None
) -> ConsentState:
    """The decision in force at ``at`` (default now): the latest row recorded by then."""
    at = at or utcnow()
    rows = store.rows(
        "SELECT granted, recorded_at, source, expires_at FROM consents"
        " WHERE profile_id = ? AND purpose = ? AND recorded_at <= ?"
        " ORDER BY recorded_at DESC, granted ASC LIMIT 1",
        [profile_id, purpose, at],
    )
    if not rows:
        return ConsentState(profile_id, purpose, "missing")
    granted, recorded_at, source, expires_at = rows[0]
    return ConsentState(
        profile_id, purpose, _status(bool(granted), expires_at, at), recorded_at, source, expires_at
    )


def current_consents(
    store: Store, profile_id: str, at: datetime | None = None
) -> list[ConsentState]:
    """The decision per purpose for one profile (purposes it has any record for)."""
    at = at or utcnow()
    rows = store.rows(
        "SELECT purpose, granted, recorded_at, source, expires_at FROM consents"
        " WHERE profile_id = ? AND recorded_at <= ?"
        " QUALIFY row_number() OVER (PARTITION BY purpose ORDER BY recorded_at DESC,"
        " granted ASC) = 1 ORDER BY purpose",
        [profile_id, at],
    )
    return [
        ConsentState(profile_id, str(p), _status(bool(g), e, at), r, s, e) for p, g, r, s, e in rows
    ]


def consent_history(store: Store, profile_ids: Iterable[str]) -> pd.DataFrame:
    """Every consent row of the profiles, oldest first."""
    return store.df(
        "SELECT profile_id, purpose, granted, source, recorded_at, expires_at FROM consents"
        " WHERE list_contains(?, profile_id) ORDER BY recorded_at, purpose",
        [sorted(set(profile_ids))],
    )


def realtime_subscriber(bridge: Any, state: Any) -> Subscriber:
    """A subscriber feeding consent changes to the API's real-time segment bridge at once.

    ``bridge`` is an ``api.realtime.RealtimeBridge``, ``state`` its ``ServingState``; a revoke
    makes segments needing that purpose drop the profile before the next request."""

    def on_change(change: ConsentChange) -> None:
        bridge.consent(
            state,
            change.profile_id,
            change.purpose,
            change.granted,
            change.recorded_at,
            change.expires_at,
        )

    return on_change
