"""Helpers for the journey tests: a CRM-imported world, events, traits, a real SMTP server.

Imported by name (``from journey_support import ...``); no fixtures are shadowed.
"""

from __future__ import annotations

import csv
import email
import socket
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import policy
from importlib import resources
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlglot import exp

from microseg.activate.channels import Channel, EmailChannel, Message
from microseg.activate.journey_model import Journey
from microseg.activate.journey_validate import journey_from_document
from microseg.activate.journeys import JourneyEngine
from microseg.activate.ledger import SendLedger, SendResult
from microseg.config.models import ProjectSettings
from microseg.config.yamlio import load_document, parse_text
from microseg.ingest.profiles import import_profiles
from microseg.personalize.content import ContentRepo, parse_content
from microseg.privacy.crypto import KeyRing
from microseg.store import Store, sql

TEMPLATES = resources.files("microseg.config") / "templates"
EVENT_PROPS = {
    "product_id": "string",
    "category": "string",
    "price": "number",
    "quantity": "number",
}


class Clock:
    """A settable naive-UTC clock."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


class Inbox:
    """aiosmtpd handler keeping every accepted message; ``fail_next`` answers 451 (transient)."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.fail_next = 0

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if self.fail_next > 0:
            self.fail_next -= 1
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted"

    def to(self, address: str) -> list[email.message.EmailMessage]:
        return [m for m in self.messages if m["To"] == address]

    @staticmethod
    def body(message: email.message.EmailMessage) -> str:
        part = message.get_body(preferencelist=("plain",))
        assert part is not None
        return str(part.get_content())


@contextmanager
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on 127.0.0.1 (aiosmtpd) collecting messages."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def template_journey(name: str) -> Journey:
    """A journey file shipped under config/templates/journeys/."""
    with resources.as_file(TEMPLATES / "journeys" / f"{name}.yaml") as path:
        return journey_from_document(load_document(path))


def parse_journey(text: str) -> Journey:
    return journey_from_document(parse_text(text, "<journey>"))


def load_template_blocks(store: Store) -> ContentRepo:
    """Save the template content blocks into the store's content repository."""
    repo = ContentRepo(store)
    text = (TEMPLATES / "journeys" / "content" / "journeys.yaml").read_text(encoding="utf-8")
    for name, spec in parse_content(text, "journeys.yaml").blocks.items():
        repo.save(name, spec)
    return repo


@dataclass
class World:
    """A store with CRM profiles (encrypted PII via the real import), events and traits."""

    store: Store
    keys: KeyRing
    clock: Clock
    pids: dict[str, str] = field(default_factory=dict)  # customer id -> profile id

    def crm(self, tmp: Path, rows: list[Mapping[str, Any]]) -> None:
        """Import CRM rows (``customer_id`` plus attributes such as email, renewal_date)."""
        path = tmp / f"crm-{uuid.uuid4().hex[:6]}.csv"
        columns = sorted({k for r in rows for k in r})
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        import_profiles(
            self.store,
            ProjectSettings(),
            self.keys,
            path,
            id_column="customer_id",
            now=self.clock.now,
        )
        for cid, pid in self.store.rows(
            "SELECT id_value, profile_id FROM identities WHERE id_type = 'user_id'"
        ):
            self.pids[str(cid)] = str(pid)

    def consent(self, cid: str, purpose: str = "email_marketing", granted: bool = True) -> None:
        """Grant (recorded long ago) or withdraw (recorded at the clock's now) a consent."""
        self.store.execute(
            "INSERT INTO consents VALUES (?, ?, ?, 'test', ?, NULL)",
            [self.pids[cid], purpose, granted, datetime(2020, 1, 1) if granted else self.clock.now],
        )

    def event(self, cid: str, event_type: str, ts: datetime, **props: Any) -> None:
        """One event of a CRM customer (keyed by their user_id identity)."""
        self.store.ensure_columns("events", EVENT_PROPS)
        cols = ["event_id", "event_type", "ts", "received_at", "user_id", "id_key", *props]
        values = [uuid.uuid4().hex, event_type, ts, ts, cid, f"user_id:{cid}", *props.values()]
        marks = ", ".join("?" for _ in cols)
        self.store.execute(f"INSERT INTO events ({', '.join(cols)}) VALUES ({marks})", values)

    def traits(self, values: Mapping[str, Mapping[str, Any]]) -> None:
        """Set trait values per customer (creates the traits table / columns as needed)."""
        if not self.store.table_exists("traits"):
            self.store.execute("CREATE TABLE traits (profile_id VARCHAR PRIMARY KEY)")
        names = {k for v in values.values() for k in v}
        self.store.ensure_columns(
            "traits",
            {
                n: "number" if all(isinstance(v.get(n, 0.0), float) for v in values.values())
                else "string"
                for n in names
            },
        )  # fmt: skip
        for cid, row in values.items():
            pid = self.pids[cid]
            self.store.execute(
                "INSERT INTO traits (profile_id) VALUES (?) ON CONFLICT DO NOTHING", [pid]
            )
            for name, value in row.items():
                update = exp.Update(
                    this=sql.table("traits"),
                    expressions=[exp.EQ(this=sql.col(name), expression=exp.Placeholder())],
                    where=exp.Where(
                        this=exp.EQ(this=sql.col("profile_id"), expression=exp.Placeholder())
                    ),
                )
                self.store.execute(update, [value, pid])

    def engine(
        self,
        journeys: list[Journey],
        channels: Mapping[str, Channel],
        **kwargs: Any,
    ) -> JourneyEngine:
        return JourneyEngine(
            self.store,
            journeys,
            channels=channels,
            keys=self.keys,
            clock=self.clock,
            ledger=SendLedger(self.store, keys=self.keys, clock=self.clock),
            **kwargs,
        )


def email_channel(port: int) -> EmailChannel:
    return EmailChannel("127.0.0.1", port, sender="shop@example.test", timeout=5)


def new_world(start: datetime, store: Store | None = None, keys: KeyRing | None = None) -> World:
    """A store (in memory unless given) with the template content blocks saved."""
    s = store or Store(None)
    world = World(s, keys or KeyRing.generate(), Clock(start))
    load_template_blocks(s)
    return world


class Recorder:
    """An in-memory channel: records messages; ``fail`` transient failures; ``crash`` raises."""

    def __init__(self, name: str = "email") -> None:
        self.name = name
        self.sent: list[Message] = []
        self.fail = 0
        self.crash: BaseException | None = None

    def send(self, message: Message) -> SendResult:
        if self.crash is not None:
            exc, self.crash = self.crash, None
            raise exc
        if self.fail > 0:
            self.fail -= 1
            return SendResult("retry", None, "451 try later")
        self.sent.append(message)
        return SendResult("sent", f"rec-{len(self.sent)}")

    def keys(self) -> list[str]:
        return [m.key for m in self.sent]
