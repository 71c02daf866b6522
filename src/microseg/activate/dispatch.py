"""The Dispatcher: consent, frequency caps and quiet hours before every send, through the ledger.

Order for one message (``deliver``):

1. a key the ledger already settled (sent / failed / skipped) returns that outcome —
   nothing is re-checked or re-sent; a key mid-attempt (``sending``) is ``in_flight`` until
   its lease expires, then it is re-attempted;
2. the outbox row is written (``pending``) before anything else, so nothing is lost;
3. consent (``consent_ok(profile_id, purpose)``), then every frequency cap — a refusal
   marks the row ``skipped`` with the reason;
4. quiet hours in the profile's time zone — the row stays ``pending`` with
   ``next_attempt_at`` at the end of the quiet period (``deferred``);
5. :meth:`SendLedger.send_once` claims the row and calls the channel.

:meth:`Dispatcher.retry_due` re-delivers due rows (transient failures, deferrals, crashed
attempts whose lease expired), re-checking consent and caps at that time.

Messages without a ``profile_id`` (operational webhooks) skip the per-profile checks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from microseg.activate.channels import Channel, FileOutboxChannel, Message
from microseg.activate.ledger import SendLedger, SendMeta, SendResult
from microseg.activate.policy import ConsentCheck, FrequencyCap, QuietHours, StoreConsent
from microseg.errors import NotFoundError, did_you_mean
from microseg.personalize.content import Rendered
from microseg.store.duckdb_store import utcnow

OUTBOX_FILE = ".microseg/outbox.jsonl"


def default_channels(project_root: str | Path) -> dict[str, Channel]:
    """The embedded default: a JSON Lines outbox file in the project folder."""
    return {"file": FileOutboxChannel(Path(project_root) / OUTBOX_FILE)}


def message_from_rendered(
    rendered: Rendered,
    *,
    key: str,
    to: str,
    channel: str,
    profile_id: str | None = None,
    purpose: str = "marketing",
    data: Mapping[str, object] | None = None,
) -> Message:
    """A Message carrying a rendered block (``channel`` is the delivery channel name)."""
    return Message(
        key=key,
        channel=channel,
        to=to,
        profile_id=profile_id,
        purpose=purpose,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        title=rendered.title,
        data=dict(data or {}),
        block=rendered.block,
        block_version=rendered.version,
    )


@dataclass
class Dispatcher:
    """Deliver messages through named channels with policy checks and the idempotent ledger."""

    ledger: SendLedger
    channels: Mapping[str, Channel]
    consent_ok: ConsentCheck | None = None
    caps: Sequence[FrequencyCap] = ()
    quiet: QuietHours | None = None
    clock: Callable[[], datetime] = utcnow
    require_consent: bool = True
    _consent: ConsentCheck = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._consent = self.consent_ok or StoreConsent(self.ledger.store, clock=self.clock)

    def channel(self, name: str) -> Channel:
        try:
            return self.channels[name]
        except KeyError:
            raise NotFoundError(f"no channel '{name}'{did_you_mean(name, self.channels)}") from None

    def deliver(self, message: Message) -> SendResult:
        """Send one message at most once, after consent, caps and quiet hours."""
        key = message.key
        status = self.ledger.status(key)
        channel = self.channel(message.channel)
        meta = SendMeta(
            channel=message.channel,
            profile_id=message.profile_id,
            purpose=message.purpose,
            block=message.block,
            block_version=message.block_version,
            recipient=message.to,
            payload=message.to_json(),
        )
        if status is None:
            self.ledger.record(key, meta)
        elif status != "pending":
            # settled (sent/failed/skipped) or mid-attempt: the ledger answers without re-checking
            return self.ledger.send_once(key, lambda: channel.send(message), meta)
        now = self.clock()
        pid = message.profile_id
        if pid is not None:
            if self.require_consent and not self._consent(pid, message.purpose):
                self.ledger.skip(key, f"no consent for '{message.purpose}'")
                return SendResult("skipped", None, f"no consent for '{message.purpose}'", 0, key)
            if message.campaign is not None:
                from microseg.measure.guards import campaign_allows

                allowed, why = campaign_allows(self.ledger.store, message.campaign, pid)
                if not allowed:
                    self.ledger.skip(key, why)
                    return SendResult("skipped", None, why, 0, key)
            for cap in self.caps:
                if not cap.allows(self.ledger, pid, now):
                    reason = f"frequency cap {cap.describe()}"
                    self.ledger.skip(key, reason)
                    return SendResult("skipped", None, reason, 0, key)
            if self.quiet is not None:
                zone = self.quiet.profile_zone(self.ledger.store, pid)
                until = self.quiet.next_allowed(now, zone)
                if until > now:
                    self.ledger.defer(key, until, f"quiet hours until {until:%Y-%m-%d %H:%M} UTC")
                    return SendResult(
                        "deferred", None, f"quiet hours until {until.isoformat()}", 0, key
                    )
        return self.ledger.send_once(key, lambda: channel.send(message), meta)

    def retry_due(self, now: datetime | None = None, limit: int = 500) -> list[SendResult]:
        """Re-deliver every due pending send (transient failures, deferrals, expired leases)."""
        results = []
        for key in self.ledger.due(now or self.clock(), limit):
            payload = self.ledger.payload(key)
            if payload is None:
                continue
            results.append(self.deliver(Message.from_json(payload)))
        return results
