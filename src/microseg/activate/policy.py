"""Send policies checked before every send: consent, frequency caps, quiet hours."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from microseg.activate.ledger import SendLedger
from microseg.errors import ConfigError
from microseg.store import Store
from microseg.store.duckdb_store import utcnow

ConsentCheck = Callable[[str, str], bool]
"""``consent_ok(profile_id, purpose) -> bool``."""


@dataclass
class StoreConsent:
    """Default consent hook: the latest ``consents`` row per profile and purpose decides.

    Granted only if that row says ``granted`` and has not expired. With no row at all the
    answer is ``when_missing`` (default False: opt-in).
    """

    store: Store
    when_missing: bool = False
    clock: Callable[[], datetime] = utcnow

    def __call__(self, profile_id: str, purpose: str) -> bool:
        rows = self.store.rows(
            "SELECT granted, expires_at FROM consents WHERE profile_id = ? AND purpose = ?"
            " ORDER BY recorded_at DESC LIMIT 1",
            [profile_id, purpose],
        )
        if not rows:
            return self.when_missing
        granted, expires_at = rows[0]
        return bool(granted) and (expires_at is None or expires_at > self.clock())

    def granted_many(self, profile_ids: list[str], purpose: str) -> set[str]:
        """The subset of ``profile_ids`` with a current grant for ``purpose`` (one query)."""
        rows = self.store.rows(
            "SELECT profile_id, arg_max(granted, recorded_at), arg_max(expires_at, recorded_at)"
            " FROM consents WHERE purpose = ? AND list_contains(?, profile_id) GROUP BY profile_id",
            [purpose, profile_ids],
        )
        now = self.clock()
        seen = {str(p) for p, _, _ in rows}
        ok = {str(p) for p, g, exp in rows if g and (exp is None or exp > now)}
        if self.when_missing:
            ok |= set(profile_ids) - seen
        return ok


@dataclass(frozen=True)
class FrequencyCap:
    """At most ``max_sends`` delivered sends per profile in a rolling ``window``.

    ``channel``/``purpose`` narrow what counts (None: every channel / purpose).
    """

    max_sends: int
    window: timedelta
    channel: str | None = None
    purpose: str | None = None

    def __post_init__(self) -> None:
        if self.max_sends < 1 or self.window <= timedelta(0):
            raise ConfigError(
                f"frequency cap needs max_sends >= 1 and a positive window, got {self}"
            )

    def allows(self, ledger: SendLedger, profile_id: str, now: datetime) -> bool:
        sent = ledger.sends_in_window(
            profile_id, now - self.window, channel=self.channel, purpose=self.purpose
        )
        return sent < self.max_sends

    def describe(self) -> str:
        scope = "/".join(x for x in (self.channel, self.purpose) if x) or "all"
        return f"{self.max_sends} per {self.window} ({scope})"


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone '{name}'") from None


@dataclass
class QuietHours:
    """No sends between ``start`` and ``end`` local time (may wrap midnight, e.g. 21:00-08:00).

    The local time is the profile's ``timezone`` attribute when known and valid, else
    ``default_tz`` (the project default). Times passed in and returned are naive UTC.
    """

    start: time = time(21, 0)
    end: time = time(8, 0)
    default_tz: str = "UTC"
    attribute: str = "timezone"
    _tz_cache: dict[str, ZoneInfo] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        _zone(self.default_tz)

    def zone(self, name: str | None) -> ZoneInfo:
        """A profile's zone; unknown or invalid names fall back to the default."""
        key = name or self.default_tz
        if key not in self._tz_cache:
            try:
                self._tz_cache[key] = ZoneInfo(key)
            except (ZoneInfoNotFoundError, ValueError):
                self._tz_cache[key] = _zone(self.default_tz)
        return self._tz_cache[key]

    def profile_zone(self, store: Store, profile_id: str) -> ZoneInfo:
        name = store.scalar(
            "SELECT value FROM profile_attributes WHERE profile_id = ? AND name = ?",
            [profile_id, self.attribute],
        )
        return self.zone(str(name) if name else None)

    def _in_window(self, local: time) -> bool:
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def is_quiet(self, at_utc: datetime, zone: ZoneInfo) -> bool:
        local = at_utc.replace(tzinfo=UTC).astimezone(zone)
        return self._in_window(local.time())

    def next_allowed(self, at_utc: datetime, zone: ZoneInfo) -> datetime:
        """``at_utc`` itself if outside quiet hours, else the (naive UTC) end of the quiet period."""
        if not self.is_quiet(at_utc, zone):
            return at_utc
        local = at_utc.replace(tzinfo=UTC).astimezone(zone)
        end = datetime.combine(local.date(), self.end, tzinfo=zone)
        if end <= local:
            end = datetime.combine(local.date() + timedelta(days=1), self.end, tzinfo=zone)
        return end.astimezone(UTC).replace(tzinfo=None)
