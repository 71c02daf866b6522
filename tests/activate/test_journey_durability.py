"""Durability: timers survive a restart, a run killed midway resumes without losing a step or
sending twice (exception in the channel, crash before the transition commits, SIGKILL of a
real process), and a failed SMTP send retried later is delivered exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from journey_support import (
    Recorder,
    World,
    email_channel,
    new_world,
    parse_journey,
    smtp_server,
    template_journey,
)

from microseg.activate.channels import FileOutboxChannel
from microseg.activate.journeys import JourneyEngine
from microseg.privacy.crypto import KeyRing
from microseg.store import Store

T0 = datetime(2026, 3, 2, 10, 0)
JOURNEY = """\
name: durable
trigger: {event: add_to_cart}
steps:
  - id: pause
    wait: 2d
  - id: mail
    send: {block: we_miss_you_final, purpose: email_marketing}
  - id: after
    wait: 1d
  - id: mail2
    send: {block: we_miss_you_final, purpose: email_marketing}
"""


def _world(tmp_path: Path, store: Store | None = None, keys: KeyRing | None = None) -> World:
    world = new_world(T0, store, keys)
    world.crm(tmp_path, [{"customer_id": "ann", "email": "ann@x.test", "first_name": "Ann"}])
    world.consent("ann")
    world.event("ann", "add_to_cart", T0)
    return world


def test_timers_survive_closing_and_reopening_the_store(tmp_path) -> None:
    path = tmp_path / "store.duckdb"
    world = _world(tmp_path, Store(path))
    rec = Recorder()
    engine = world.engine([parse_journey(JOURNEY)], {"email": rec})
    engine.run(T0 + timedelta(minutes=5))
    assert engine.timers.pending()["kind"].tolist() == ["wake"]
    world.store.close()

    store = Store(path)  # a new process would do exactly this
    engine = JourneyEngine(
        store, [parse_journey(JOURNEY)], channels={"email": rec}, keys=world.keys
    )
    engine.run(T0 + timedelta(days=1))
    assert rec.sent == []
    engine.run(T0 + timedelta(days=2, minutes=1))
    assert len(rec.sent) == 1
    engine.run(T0 + timedelta(days=3, minutes=1))
    assert [m.data["step"] for m in rec.sent] == ["mail", "mail2"]
    assert engine.state("durable", world.pids["ann"])["status"] == "completed"
    store.close()


def test_exception_inside_the_channel_then_resume_sends_once(tmp_path) -> None:
    world = _world(tmp_path)
    rec = Recorder()
    rec.crash = KeyboardInterrupt()  # the process is interrupted while talking to the channel
    engine = world.engine([parse_journey(JOURNEY)], {"email": rec})
    engine.run(T0 + timedelta(minutes=5))
    with pytest.raises(KeyboardInterrupt):
        engine.run(T0 + timedelta(days=2, minutes=1))
    state = engine.state("durable", world.pids["ann"])
    assert (state["step"], state["status"]) == ("mail", "active")  # the step is not lost
    resumed = world.engine([parse_journey(JOURNEY)], {"email": rec})
    resumed.run(T0 + timedelta(days=2, minutes=2))
    resumed.run(T0 + timedelta(days=2, minutes=3))
    assert [m.data["step"] for m in rec.sent] == ["mail"]
    assert resumed.ledger.get(rec.sent[0].key)["attempts"] == 2


def test_crash_after_the_send_before_the_transition_never_double_sends(tmp_path) -> None:
    world = _world(tmp_path)
    rec = Recorder()
    engine = world.engine([parse_journey(JOURNEY)], {"email": rec})
    engine.run(T0 + timedelta(minutes=5))
    real = engine._transition
    crashed = []

    def crash_once(*args: Any, **kwargs: Any) -> None:
        if not crashed and args[0].step == "mail":  # the transition after the send step
            crashed.append(True)
            raise SystemExit("killed between send and commit")
        real(*args, **kwargs)

    engine._transition = crash_once  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        engine.run(T0 + timedelta(days=2, minutes=1))
    assert len(rec.sent) == 1  # delivered, but the journey did not move on
    resumed = world.engine([parse_journey(JOURNEY)], {"email": rec})
    report = resumed.run(T0 + timedelta(days=2, minutes=2))
    assert report.sends == {"duplicate": 1}
    assert len(rec.sent) == 1
    assert resumed.state("durable", world.pids["ann"])["step"] == "after"


def test_a_sigkilled_process_mid_send_resumes_and_delivers_once(tmp_path) -> None:
    path = tmp_path / "store.duckdb"
    key_file = tmp_path / "keys"
    world = _world(tmp_path, Store(path), KeyRing.load_or_create(key_file))
    world.store.close()
    outbox = tmp_path / "outbox.jsonl"
    script = tmp_path / "child.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, signal, sys
            from datetime import datetime
            from pathlib import Path
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from journey_support import parse_journey
            from microseg.activate.journeys import JourneyEngine
            from microseg.privacy.crypto import KeyRing
            from microseg.store import Store

            class Killer:
                name = "email"
                def send(self, message):
                    os.kill(os.getpid(), signal.SIGKILL)

            store = Store({str(path)!r})
            keys = KeyRing.load_or_create(Path({str(key_file)!r}))
            engine = JourneyEngine(
                store, [parse_journey({JOURNEY!r})], channels={{"email": Killer()}}, keys=keys
            )
            engine.run(datetime(2026, 3, 2, 10, 5))
            engine.run(datetime(2026, 3, 4, 10, 1))
            """
        )
    )
    child = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=120)
    assert child.returncode == -9, child.stderr.decode()[-2000:]

    store = Store(path)
    engine = JourneyEngine(
        store,
        [parse_journey(JOURNEY)],
        channels={"email": FileOutboxChannel(outbox)},
        keys=KeyRing.load_or_create(key_file),
    )
    engine.run(datetime(2026, 3, 4, 10, 2))  # lease of the killed attempt still held
    assert not outbox.exists() or outbox.read_text() == ""
    assert engine.state("durable", world.pids["ann"])["step"] == "after"  # ledger owns it now
    engine.run(datetime(2026, 3, 4, 10, 10))  # lease expired: the ledger re-delivers
    engine.run(datetime(2026, 3, 4, 10, 20))
    lines = [json.loads(x) for x in outbox.read_text().splitlines()]
    assert [x["key"] for x in lines] == [f"durable:{world.pids['ann']}:mail:1"]
    store.close()


def test_failed_smtp_send_is_retried_later_and_delivered_exactly_once(tmp_path) -> None:
    world = _world(tmp_path)
    with smtp_server() as (inbox, port):
        inbox.fail_next = 2  # 451 twice: transient
        engine = world.engine(
            [template_journey("cart_abandonment")], {"email": email_channel(port)}
        )
        engine.run(T0 + timedelta(minutes=5))
        report = engine.run(T0 + timedelta(hours=24, minutes=1))
        assert report.sends == {"retry": 1} and inbox.messages == []
        key = f"cart_abandonment:{world.pids['ann']}:remind:1"
        assert engine.ledger.status(key) == "pending"
        engine.run(T0 + timedelta(hours=24, minutes=2))  # backoff not over yet
        engine.run(T0 + timedelta(hours=25))  # second attempt: 451 again
        engine.run(T0 + timedelta(hours=26))  # third attempt: delivered
        for hours in (27, 30, 48):
            engine.run(T0 + timedelta(hours=hours))
    assert len(inbox.messages) == 1
    row = engine.ledger.get(key)
    assert (row["status"], row["attempts"]) == ("sent", 3)


def test_a_sweep_that_crashes_mid_transaction_enrols_nobody_twice(tmp_path, monkeypatch) -> None:
    from microseg.activate import journey_sweep

    world = _world(tmp_path)
    rec = Recorder()
    always = "trigger: {event: add_to_cart}\nreentry: always\n"
    journey = parse_journey(JOURNEY.replace("trigger: {event: add_to_cart}\n", always))
    engine = world.engine([journey], {"email": rec})
    real = journey_sweep.enrol

    def enrol_then_die(*args: Any) -> int:
        real(*args)  # rows written inside the sweep's transaction ...
        raise KeyboardInterrupt  # ... and the process dies before the watermark commits

    monkeypatch.setattr(journey_sweep, "enrol", enrol_then_die)
    with pytest.raises(KeyboardInterrupt):
        engine.run(T0 + timedelta(minutes=5))
    assert engine.state("durable", world.pids["ann"]) is None  # rolled back
    assert engine.timers.pending().empty
    monkeypatch.setattr(journey_sweep, "enrol", real)
    assert engine.run(T0 + timedelta(minutes=6)).enrolled == {"durable": 1}
    assert engine.run(T0 + timedelta(minutes=7)).enrolled == {"durable": 0}
    assert engine.state("durable", world.pids["ann"])["enrolment"] == 1
