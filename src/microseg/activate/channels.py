"""Delivery channels: SMTP email, webhooks (retry with backoff + jitter), a JSON Lines outbox.

Every channel implements ``send(message) -> SendResult`` and never raises for a delivery
problem: transient failures come back as ``retry`` (the ledger keeps the row pending),
permanent ones as ``failed``. Channels are stateless about idempotency — wrap them with
:meth:`microseg.activate.ledger.SendLedger.send_once` (or use the Dispatcher) so a retry
never sends twice. Each channel still hands the key to the receiver (``Idempotency-Key``
header, key-derived ``Message-ID``) so the receiver can drop a duplicate after a crash.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx

from microseg.activate.ledger import SendResult


@dataclass(frozen=True)
class Message:
    """One message to one recipient on one channel, with its idempotency key."""

    key: str
    channel: str
    to: str
    profile_id: str | None = None
    purpose: str = "marketing"
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    title: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    block: str | None = None
    block_version: int | None = None
    campaign: str | None = None  # paused / throttled by the campaign guards (measure.guards)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Message:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@runtime_checkable
class Channel(Protocol):
    """Anything that can deliver a Message."""

    name: str

    def send(self, message: Message) -> SendResult:
        """Deliver one message; ``retry`` for transient failures, ``failed`` for permanent ones."""
        ...


def message_id(key: str, domain: str = "microseg.local") -> str:
    """A stable RFC 5322 Message-ID derived from the idempotency key."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


# -- email ------------------------------------------------------------------------------------
@dataclass
class EmailChannel:
    """Email through a real SMTP server (smtplib), optional STARTTLS and login."""

    host: str
    port: int = 25
    sender: str = "microseg@localhost"
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    timeout: float = 10.0
    ssl_context: ssl.SSLContext | None = None
    domain: str = "microseg.local"
    name: str = "email"

    def build(self, message: Message) -> EmailMessage:
        """The MIME message: text and/or HTML alternative, key-derived Message-ID."""
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.to
        mail["Subject"] = message.subject or ""
        mail["Date"] = formatdate(usegmt=True)
        mail["Message-ID"] = message_id(message.key, self.domain)
        mail["X-Microseg-Send-Key"] = message.key
        text = message.text if message.text is not None else ""
        mail.set_content(text)
        if message.html is not None:
            mail.add_alternative(message.html, subtype="html")
        return mail

    def send(self, message: Message) -> SendResult:
        mail = self.build(message)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=self.ssl_context or ssl.create_default_context())
                if self.username is not None:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            transient = all(400 <= c < 500 for c in codes)
            return SendResult(
                "retry" if transient else "failed", None, f"recipient refused: {codes}"
            )
        except smtplib.SMTPResponseException as exc:
            transient = 400 <= exc.smtp_code < 500
            return SendResult(
                "retry" if transient else "failed",
                None,
                f"SMTP {exc.smtp_code}: {exc.smtp_error!r}",
            )
        except (
            smtplib.SMTPException,
            OSError,
        ) as exc:  # disconnects, refused connections, timeouts
            return SendResult("retry", None, f"{type(exc).__name__}: {exc}")
        return SendResult("sent", str(mail["Message-ID"]))


# -- webhook ----------------------------------------------------------------------------------
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass
class WebhookChannel:
    """POST the message as JSON; retries transient failures with exponential backoff + jitter.

    Delay before retry ``n`` (1-based) is uniform in ``[0, min(max_delay, base_delay * 2**(n-1))]``
    ("full jitter"); a ``Retry-After`` header in seconds is honoured up to ``max_delay``.
    """

    url: str
    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 30.0
    timeout: float = 10.0
    headers: dict[str, str] = field(default_factory=dict)
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    client: httpx.Client | None = None
    name: str = "webhook"

    def delay(self, retry: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        if retry_after is not None:
            try:
                return min(self.max_delay, max(0.0, float(retry_after)))
            except ValueError:
                pass
        return self.rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** (retry - 1)))

    def body(self, message: Message) -> dict[str, Any]:
        return {
            "key": message.key,
            "to": message.to,
            "profile_id": message.profile_id,
            "purpose": message.purpose,
            "subject": message.subject,
            "title": message.title,
            "text": message.text,
            "html": message.html,
            "block": message.block,
            "block_version": message.block_version,
            "data": message.data,
        }

    def send(self, message: Message) -> SendResult:
        client = self.client or httpx.Client(timeout=self.timeout)
        headers = {
            "Idempotency-Key": message.key,
            "Content-Type": "application/json",
            **self.headers,
        }
        payload = json.dumps(self.body(message), default=str).encode()
        error = "no attempt"
        try:
            for attempt in range(1, self.max_retries + 2):
                retry_after = None
                try:
                    resp = client.post(self.url, content=payload, headers=headers)
                except httpx.TransportError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                else:
                    if resp.status_code < 300:
                        provider = resp.headers.get("x-request-id") or f"http-{resp.status_code}"
                        return SendResult("sent", provider, None, attempt)
                    error = f"HTTP {resp.status_code}: {resp.text[:200]}"
                    if resp.status_code not in RETRY_STATUS:
                        return SendResult("failed", None, error, attempt)
                    retry_after = resp.headers.get("retry-after")
                if attempt <= self.max_retries:
                    self.sleep(self.delay(attempt, retry_after))
            return SendResult("retry", None, error, self.max_retries + 1)
        finally:
            if self.client is None:
                client.close()


# -- JSON Lines outbox (embedded default) ------------------------------------------------------
@dataclass
class FileOutboxChannel:
    """Append each message as one JSON line to a file in the project (e.g. ``.microseg/outbox.jsonl``).

    The embedded default channel: nothing leaves the machine; another process (or a human)
    reads the file. Writes are flushed and fsync'ed before ``sent`` is reported.
    """

    path: Path
    name: str = "file"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def send(self, message: Message) -> SendResult:
        line = json.dumps(
            {"sent_at": time.time(), **message.to_json()}, default=str, ensure_ascii=False
        )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock, self.path.open("a", encoding="utf-8") as fh:
                offset = fh.tell()
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            return SendResult("retry", None, f"{type(exc).__name__}: {exc}")
        return SendResult("sent", f"{self.path.name}@{offset}")

    def read(self) -> list[dict[str, Any]]:
        """Every message written so far."""
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
