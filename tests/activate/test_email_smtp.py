"""Email through a real SMTP server (aiosmtpd on 127.0.0.1), via the ledger and dispatcher."""

from __future__ import annotations

import email
import socket
from collections.abc import Iterator
from email import policy
from typing import Any

import pytest
from activate_fixtures import *  # noqa: F403  (shared pytest fixtures: store, keys, clock, grant)
from aiosmtpd.controller import Controller

from microseg.activate.channels import EmailChannel, Message
from microseg.activate.dispatch import Dispatcher, message_from_rendered
from microseg.activate.ledger import SendLedger
from microseg.personalize.content import parse_content, render_block


class Collector:
    """aiosmtpd handler keeping every accepted message; some recipients are refused."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], email.message.EmailMessage]] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 No such user"
        if address.startswith("busy@"):
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def smtp() -> Iterator[tuple[Collector, int]]:
    handler = Collector()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


BLOCK = parse_content(
    "blocks:\n  renewal:\n    placeholders: {first_name: there}\n    variants:\n"
    "      - id: e\n        channel: email\n"
    "        subject: 'Your plan renews soon, {{ first_name }}'\n"
    "        text: 'Hi {{ first_name }}, your plan renews on {{ renewal_date }}.'\n"
    "        html: '<p>Hi {{ first_name }}, renews on <b>{{ renewal_date }}</b></p>'\n"
).blocks["renewal"]


def test_rendered_email_arrives_with_subject_body_recipient(smtp, store, clock, grant) -> None:
    handler, port = smtp
    rendered = render_block(
        BLOCK, {"first_name": "Zoë", "renewal_date": "2026-04-01"}, channel="email"
    )
    channel = EmailChannel("127.0.0.1", port, sender="news@shop.test")
    grant("p1", "marketing")
    dispatcher = Dispatcher(SendLedger(store, clock=clock), {"email": channel}, clock=clock)
    msg = message_from_rendered(
        rendered, key="renewal-7d:p1", to="zoe@example.com", channel="email", profile_id="p1"
    )
    first = dispatcher.deliver(msg)
    assert first.status == "sent" and first.attempts == 1
    again = dispatcher.deliver(msg)  # a retry of the same key never sends twice
    assert again.status == "duplicate" and again.ok and again.provider_id == first.provider_id
    assert len(handler.messages) == 1
    mail_from, rcpts, mail = handler.messages[0]
    assert mail_from == "news@shop.test" and rcpts == ["zoe@example.com"]
    assert mail["Subject"] == "Your plan renews soon, Zoë"
    assert (
        mail["Message-ID"] == first.provider_id and mail["X-Microseg-Send-Key"] == "renewal-7d:p1"
    )
    text = mail.get_body(preferencelist=("plain",)).get_content()
    html = mail.get_body(preferencelist=("html",)).get_content()
    assert "Hi Zoë, your plan renews on 2026-04-01." in text
    assert "<b>2026-04-01</b>" in html
    row = store.rows(
        "SELECT status, attempts, block, block_version FROM sends WHERE send_key = 'renewal-7d:p1'"
    )
    assert row == [("sent", 1, "<inline>", 0)]


def test_refused_recipients_and_unreachable_server(smtp, store, clock) -> None:
    handler, port = smtp
    ledger = SendLedger(store, clock=clock)
    channel = EmailChannel("127.0.0.1", port)
    dispatcher = Dispatcher(ledger, {"email": channel}, require_consent=False, clock=clock)
    perm = dispatcher.deliver(
        Message("k-perm", "email", "nobody@example.com", subject="s", text="t")
    )
    assert perm.status == "failed" and "550" in (perm.error or "")
    temp = dispatcher.deliver(Message("k-temp", "email", "busy@example.com", subject="s", text="t"))
    assert temp.status == "retry" and ledger.get("k-temp")["status"] == "pending"
    down = EmailChannel("127.0.0.1", _free_port(), timeout=2)
    result = down.send(Message("k-down", "email", "a@example.com", subject="s", text="t"))
    assert result.status == "retry" and "ConnectionRefused" in (result.error or "")
    assert handler.messages == []
    # the permanent failure is final: retrying the key does not contact the server again
    assert (
        dispatcher.deliver(
            Message("k-perm", "email", "nobody@example.com", subject="s", text="t")
        ).status
        == "failed"
    )


def _self_signed(tmp_path) -> tuple[str, str, bytes]:
    """A throwaway certificate for 127.0.0.1 (cert path, key path, PEM)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path), pem


def test_starttls_is_used_and_verified(tmp_path) -> None:
    import ssl

    cert, key, pem = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    handler = Collector()
    port = _free_port()
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, tls_context=server_ctx, require_starttls=True
    )
    controller.start()
    try:
        plain = EmailChannel("127.0.0.1", port).send(
            Message("k0", "email", "a@example.com", subject="s", text="t")
        )
        assert plain.status == "failed" and "530" in (plain.error or "")  # server demands STARTTLS
        trusting = ssl.create_default_context(cadata=pem.decode())
        tls = EmailChannel("127.0.0.1", port, starttls=True, ssl_context=trusting)
        result = tls.send(
            Message("k1", "email", "a@example.com", subject="Over TLS", text="secret")
        )
        assert result.status == "sent", result.error
        untrusted = EmailChannel("127.0.0.1", port, starttls=True).send(
            Message("k2", "email", "a@example.com", subject="s", text="t")
        )
        assert untrusted.status == "retry" and "CERTIFICATE_VERIFY_FAILED" in (
            untrusted.error or ""
        )
    finally:
        controller.stop()
    assert [m[2]["Subject"] for m in handler.messages] == ["Over TLS"]
