"""Ledger idempotency and crash recovery, consent, frequency caps, quiet hours, file outbox."""

from __future__ import annotations

import json
import threading
from datetime import datetime, time, timedelta
from pathlib import Path

import pytest
from activate_fixtures import *  # noqa: F403  (shared pytest fixtures: store, keys, clock, grant)

from microseg.activate.channels import FileOutboxChannel, Message
from microseg.activate.dispatch import OUTBOX_FILE, Dispatcher, default_channels
from microseg.activate.ledger import SendLedger, SendMeta, SendResult
from microseg.activate.policy import FrequencyCap, QuietHours, StoreConsent
from microseg.errors import ConfigError, NotFoundError


def _msg(key: str, pid: str = "p1", purpose: str = "marketing", channel: str = "file") -> Message:
    return Message(
        key,
        channel,
        f"{pid}@example.com",
        profile_id=pid,
        purpose=purpose,
        subject="Hi",
        text="Body",
    )


def test_send_once_runs_the_function_once_per_key(store, clock) -> None:
    ledger = SendLedger(store, clock=clock)
    calls: list[int] = []

    def fn() -> SendResult:
        calls.append(1)
        return SendResult("sent", f"id-{len(calls)}")

    assert ledger.send_once("k1", fn, SendMeta("file", "p1")).status == "sent"
    again = ledger.send_once("k1", fn)
    assert (again.status, again.provider_id, len(calls)) == ("duplicate", "id-1", 1)
    assert ledger.counts() == {"sent": 1}


def test_concurrent_deliveries_of_one_key_send_once(store, clock, tmp_path: Path) -> None:
    outbox = FileOutboxChannel(tmp_path / "outbox.jsonl")
    dispatcher = Dispatcher(
        SendLedger(store, clock=clock), {"file": outbox}, require_consent=False, clock=clock
    )
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(dispatcher.deliver(_msg("same")).status))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outbox.read()) == 1
    assert results.count("sent") == 1 and set(results) <= {"sent", "duplicate", "in_flight"}


def test_a_crash_mid_send_is_recovered_after_the_lease(store, clock, tmp_path: Path) -> None:
    ledger = SendLedger(store, clock=clock, lease=timedelta(minutes=5))
    outbox = FileOutboxChannel(tmp_path / "o.jsonl")
    dispatcher = Dispatcher(ledger, {"file": outbox}, require_consent=False, clock=clock)

    class Crash(BaseException):
        pass

    def crash() -> SendResult:
        raise Crash

    ledger.record("k", SendMeta("file", "p1", payload=_msg("k").to_json()))
    with pytest.raises(Crash):
        ledger.send_once("k", crash)
    row = ledger.get("k")
    assert row["status"] == "pending" and row["attempts"] == 1 and "Crash" in row["last_error"]
    # simulate a hard kill while 'sending': the row is claimed but never finished
    store.execute(
        "UPDATE sends SET status = 'sending', lease_until = ? WHERE send_key = 'k'",
        [clock.now + timedelta(minutes=5)],
    )
    assert ledger.due() == [] and dispatcher.deliver(_msg("k")).status == "in_flight"
    clock.advance(minutes=6)
    assert ledger.due() == ["k"]
    assert [r.status for r in dispatcher.retry_due()] == ["sent"]
    assert len(outbox.read()) == 1 and ledger.get("k")["attempts"] == 2


def test_consent_is_checked_before_every_send(store, clock, grant, tmp_path: Path) -> None:
    outbox = FileOutboxChannel(tmp_path / "o.jsonl")
    dispatcher = Dispatcher(SendLedger(store, clock=clock), {"file": outbox}, clock=clock)
    grant("p1", "marketing", True, at=datetime(2026, 1, 1))
    grant("p2", "marketing", True, at=datetime(2026, 1, 1))
    grant("p2", "marketing", False, at=datetime(2026, 2, 1))  # latest row wins: withdrawn
    grant("p3", "marketing", True, expires_at=datetime(2026, 3, 1))  # expired
    results = {
        pid: dispatcher.deliver(_msg(f"k-{pid}", pid)).status for pid in ("p1", "p2", "p3", "p4")
    }
    assert results == {"p1": "sent", "p2": "skipped", "p3": "skipped", "p4": "skipped"}
    assert [m["profile_id"] for m in outbox.read()] == ["p1"]
    assert dispatcher.ledger.get("k-p4")["last_error"] == "no consent for 'marketing'"
    # a custom hook replaces the table lookup
    custom = Dispatcher(
        SendLedger(store, clock=clock),
        {"file": outbox},
        consent_ok=lambda p, purpose: p == "p4",
        clock=clock,
    )
    assert custom.deliver(_msg("k2-p4", "p4")).status == "sent"
    assert StoreConsent(store, clock=clock).granted_many(["p1", "p2", "p3", "p4"], "marketing") == {
        "p1"
    }


def test_frequency_cap_counts_sends_in_the_window(store, clock, tmp_path: Path) -> None:
    outbox = FileOutboxChannel(tmp_path / "o.jsonl")
    caps = [FrequencyCap(2, timedelta(days=7)), FrequencyCap(1, timedelta(hours=1), channel="file")]
    dispatcher = Dispatcher(
        SendLedger(store, clock=clock),
        {"file": outbox},
        caps=caps,
        require_consent=False,
        clock=clock,
    )
    assert dispatcher.deliver(_msg("a")).status == "sent"
    blocked = dispatcher.deliver(_msg("b"))
    assert blocked.status == "skipped" and "1 per 1:00:00 (file)" in (blocked.error or "")
    clock.advance(hours=2)
    assert dispatcher.deliver(_msg("c")).status == "sent"
    clock.advance(hours=2)
    assert dispatcher.deliver(_msg("d")).status == "skipped"  # 2 in 7 days
    assert dispatcher.deliver(_msg("e", pid="p2")).status == "sent"  # caps are per profile
    clock.advance(days=7)
    assert dispatcher.deliver(_msg("f")).status == "sent"
    with pytest.raises(ConfigError):
        FrequencyCap(0, timedelta(days=1))


def test_quiet_hours_in_the_profile_time_zone(store, clock, tmp_path: Path) -> None:
    quiet = QuietHours(time(21), time(8), default_tz="Europe/London")
    ny, ldn = quiet.zone("America/New_York"), quiet.zone(None)
    assert quiet.zone("Not/AZone") == ldn
    at = datetime(2026, 3, 2, 23, 30)  # 23:30 UTC = 18:30 New York, 23:30 London
    assert not quiet.is_quiet(at, ny) and quiet.is_quiet(at, ldn)
    assert quiet.next_allowed(at, ldn) == datetime(2026, 3, 3, 8, 0)
    assert quiet.next_allowed(datetime(2026, 3, 3, 6, 0), ny) == datetime(
        2026, 3, 3, 13, 0
    )  # 01:00 NY -> 08:00 NY
    day = QuietHours(time(12), time(14))
    assert day.is_quiet(datetime(2026, 3, 2, 13), day.zone(None)) and not day.is_quiet(
        datetime(2026, 3, 2, 14), day.zone(None)
    )
    with pytest.raises(ConfigError):
        QuietHours(default_tz="Mars/Olympus")

    store.execute(
        "INSERT INTO profile_attributes VALUES ('p_ny', 'timezone', 'America/New_York', NULL, 'crm', ?)",
        [clock.now],
    )
    clock.now = at
    outbox = FileOutboxChannel(tmp_path / "o.jsonl")
    dispatcher = Dispatcher(
        SendLedger(store, clock=clock),
        {"file": outbox},
        quiet=quiet,
        require_consent=False,
        clock=clock,
    )
    assert dispatcher.deliver(_msg("ny", "p_ny")).status == "sent"
    deferred = dispatcher.deliver(_msg("uk", "p_uk"))
    assert deferred.status == "deferred"
    row = dispatcher.ledger.get("uk")
    assert row["status"] == "pending" and row["next_attempt_at"] == datetime(2026, 3, 3, 8, 0)
    clock.now = datetime(2026, 3, 3, 7, 59)
    assert dispatcher.retry_due() == []
    clock.now = datetime(2026, 3, 3, 8, 0)
    assert [r.status for r in dispatcher.retry_due()] == ["sent"]
    assert [m["key"] for m in outbox.read()] == ["ny", "uk"]


def test_file_outbox_is_the_default_and_payloads_are_encrypted(
    store, keys, clock, tmp_path: Path
) -> None:
    channels = default_channels(tmp_path)
    dispatcher = Dispatcher(
        SendLedger(store, keys=keys, clock=clock), channels, require_consent=False, clock=clock
    )
    assert dispatcher.deliver(_msg("k", "p9")).status == "sent"
    lines = (tmp_path / OUTBOX_FILE).read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["to"] == "p9@example.com"
    raw = store.scalar("SELECT payload FROM sends WHERE send_key = 'k'")
    assert "p9@example.com" not in raw and "enc" in json.loads(raw)
    assert dispatcher.ledger.payload("k")["to"] == "p9@example.com"
    assert store.scalar("SELECT recipient_token FROM sends").startswith("tok_")
    with pytest.raises(NotFoundError, match="did you mean 'file'"):
        dispatcher.deliver(_msg("x", channel="fil"))


def test_paused_or_throttled_campaign_skips_the_send(store, clock, tmp_path: Path) -> None:
    from microseg.measure.guards import set_campaign_status

    outbox = FileOutboxChannel(tmp_path / "outbox.jsonl")
    dispatcher = Dispatcher(
        SendLedger(store, clock=clock), {"file": outbox}, require_consent=False, clock=clock
    )

    def msg(key: str, pid: str) -> Message:
        return Message(key, "file", f"{pid}@example.com", profile_id=pid, campaign="winback")

    assert dispatcher.deliver(msg("a", "p1")).status == "sent"  # unknown campaign: active
    set_campaign_status(store, "winback", "paused", reason="kpi fell", actor="test")
    paused = dispatcher.deliver(msg("b", "p1"))
    assert (paused.status, paused.error) == ("skipped", "campaign_paused")
    set_campaign_status(store, "winback", "active", reason="recovered", actor="test", share=0.5)
    sent = [dispatcher.deliver(msg(f"c{i}", f"p{i}")).status for i in range(400)]
    assert 120 < sent.count("sent") < 280  # about half the recipients, by a stable bucket
    assert {s for s in sent} == {"sent", "skipped"}
    assert len(outbox.read()) == 1 + sent.count("sent")
