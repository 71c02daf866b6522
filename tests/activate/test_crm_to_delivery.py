"""End to end with the real CRM import: encrypted PII from ``import_profiles`` is decrypted
for templates, messages go out through the outbox under consent and quiet hours, and the
same profiles are exported as a hashed audience."""

from __future__ import annotations

import csv
import hashlib
from datetime import datetime, time
from pathlib import Path

import pytest
from activate_fixtures import *  # noqa: F403  (shared pytest fixtures: store, keys, clock, grant)

from microseg.activate.audience import export_audience
from microseg.activate.channels import FileOutboxChannel
from microseg.activate.dispatch import Dispatcher, message_from_rendered
from microseg.activate.ledger import SendLedger
from microseg.activate.policy import QuietHours
from microseg.config.models import ProjectSettings
from microseg.personalize.content import ProfileContextLoader, parse_content, read_pii, render_block

import_profiles = pytest.importorskip("microseg.ingest.profiles").import_profiles

BLOCK = parse_content(
    """\
blocks:
  renewal:
    placeholders: {first_name: there, city: your city}
    variants:
      - id: e
        channel: email
        subject: "{{ first_name }}, your membership renews on {{ renewal_date|date('%d %b') }}"
        text: "See you at the {{ city }} club."
"""
).blocks["renewal"]


def test_crm_profiles_render_send_and_export(store, keys, clock, grant, tmp_path: Path) -> None:
    crm = tmp_path / "crm.csv"
    with crm.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["customer_id", "email", "first_name", "phone", "city", "timezone", "renewal_date"]
        )
        for i in range(110):
            w.writerow(
                [
                    f"c{i}",
                    f"  Member{i}@Example.org",
                    "" if i == 5 else f"Name{i}",
                    f"+44 7700 9{i:05d}",
                    "Leeds" if i % 2 else "",
                    "Asia/Tokyo" if i % 10 == 0 else "Europe/London",
                    "2026-04-15",
                ]
            )
    result = import_profiles(
        store, ProjectSettings(), keys, crm, id_column="customer_id", now=datetime(2026, 3, 1)
    )
    assert (result.rows_read, result.profiles_created, result.quarantined) == (110, 110, 0)
    pids = [
        r[0]
        for r in store.rows(
            "SELECT profile_id FROM identities WHERE id_type = 'user_id' ORDER BY id_value"
        )
    ]
    assert len(pids) == 110
    first = store.scalar("SELECT profile_id FROM identities WHERE id_key = 'user_id:c1'")
    assert read_pii(store, keys, first, ["first_name"]) == {"first_name": "Name1"}

    for pid in pids:
        grant(pid, "marketing")
        grant(pid, "advertising")
    clock.now = datetime(2026, 3, 2, 13, 0)  # 13:00 London, 22:00 Tokyo (quiet)
    outbox = FileOutboxChannel(tmp_path / "outbox.jsonl")
    dispatcher = Dispatcher(
        SendLedger(store, keys=keys, clock=clock),
        {"file": outbox},
        quiet=QuietHours(time(21), time(8), default_tz="Europe/London"),
        clock=clock,
    )
    loader = ProfileContextLoader(store, keys)
    statuses = {}
    for pid in pids:
        ctx = loader.load(pid, as_of=clock.now)
        rendered = render_block(BLOCK, ctx, channel="email")
        assert rendered.ok, rendered.errors
        msg = message_from_rendered(
            rendered,
            key=f"renewal-2026-04:{pid}",
            to=ctx["email"],
            channel="file",
            profile_id=pid,
            purpose="marketing",
        )
        statuses[pid] = dispatcher.deliver(msg).status
    assert list(statuses.values()).count("deferred") == 11  # the Tokyo members
    sent = {m["to"].strip().lower(): m for m in outbox.read()}
    assert len(sent) == 99
    assert sent["member1@example.org"]["subject"] == "Name1, your membership renews on 15 Apr"
    assert sent["member1@example.org"]["text"] == "See you at the Leeds club."
    assert sent["member5@example.org"]["subject"].startswith("there,")  # missing first name
    assert sent["member2@example.org"]["text"] == "See you at the your city club."
    clock.now = datetime(2026, 3, 3, 0, 0)  # 09:00 Tokyo
    assert [r.status for r in dispatcher.retry_due()] == ["sent"] * 11
    assert len(outbox.read()) == 110

    export = export_audience(store, keys, pids, tmp_path / "meta.csv", platform="meta", k=100)
    assert export.rows == 110
    with (tmp_path / "meta.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    hashed = {r["email"] for r in rows}
    assert hashlib.sha256(b"member7@example.org").hexdigest() in hashed
    assert hashlib.sha256(b"447700900007").hexdigest() in {r["phone"] for r in rows}
