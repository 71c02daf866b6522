"""Webhooks against a real local HTTP server that fails the first N calls."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from activate_fixtures import *  # noqa: F403  (shared pytest fixtures: store, keys, clock, grant)

from microseg.activate.channels import Message, WebhookChannel
from microseg.activate.dispatch import Dispatcher
from microseg.activate.ledger import SendLedger


class FlakyServer:
    """Answers ``fail_status`` to the first ``fail_first`` POSTs, then 200; records everything."""

    def __init__(
        self, fail_first: int = 0, fail_status: int = 503, retry_after: str | None = None
    ) -> None:
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.retry_after = retry_after
        self.calls: list[dict[str, Any]] = []
        self.delivered: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.calls.append({"key": self.headers.get("Idempotency-Key"), "body": body})
                    failing = len(outer.calls) <= outer.fail_first
                    if not failing:
                        outer.delivered.append(body)
                status = outer.fail_status if failing else 200
                self.send_response(status)
                if failing and outer.retry_after:
                    self.send_header("Retry-After", outer.retry_after)
                self.send_header("X-Request-Id", f"req-{len(outer.calls)}")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FlakyServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server_factory() -> Iterator[Any]:
    servers: list[FlakyServer] = []

    def make(**kwargs: Any) -> FlakyServer:
        srv = FlakyServer(**kwargs).__enter__()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.__exit__()


def _msg(key: str = "cart-24h:p1") -> Message:
    return Message(
        key,
        "webhook",
        "device-token-1",
        profile_id="p1",
        title="Cart",
        text="Still there?",
        data={"segment": "cart_abandoners"},
    )


def test_retries_with_backoff_until_success(server_factory) -> None:
    srv = server_factory(fail_first=2)
    slept: list[float] = []
    channel = WebhookChannel(
        srv.url, max_retries=3, base_delay=0.2, sleep=slept.append, rng=random.Random(7)
    )
    result = channel.send(_msg())
    assert result.status == "sent" and result.attempts == 3 and result.provider_id == "req-3"
    assert [c["key"] for c in srv.calls] == ["cart-24h:p1"] * 3  # same idempotency key every time
    assert (
        srv.delivered[0]["data"] == {"segment": "cart_abandoners"}
        and srv.delivered[0]["text"] == "Still there?"
    )
    assert (
        len(slept) == 2 and 0 <= slept[0] <= 0.2 and 0 <= slept[1] <= 0.4
    )  # full jitter, doubling cap


def test_retry_after_header_is_honoured_and_capped(server_factory) -> None:
    srv = server_factory(fail_first=1, fail_status=429, retry_after="120")
    slept: list[float] = []
    channel = WebhookChannel(srv.url, max_retries=1, max_delay=5, sleep=slept.append)
    assert channel.send(_msg()).status == "sent" and slept == [5]


def test_client_errors_are_permanent(server_factory) -> None:
    srv = server_factory(fail_first=5, fail_status=400)
    channel = WebhookChannel(srv.url, max_retries=3, sleep=lambda s: None)
    result = channel.send(_msg())
    assert result.status == "failed" and "HTTP 400" in (result.error or "") and len(srv.calls) == 1


def test_outage_keeps_the_send_pending_then_delivers_exactly_once(
    server_factory, store, clock
) -> None:
    srv = server_factory(fail_first=3, fail_status=500)
    ledger = SendLedger(store, clock=clock, rng=random.Random(1))
    channel = WebhookChannel(srv.url, max_retries=1, base_delay=0.01, sleep=lambda s: None)
    dispatcher = Dispatcher(ledger, {"webhook": channel}, require_consent=False, clock=clock)
    first = dispatcher.deliver(_msg())
    assert first.status == "retry" and len(srv.calls) == 2
    row = ledger.get("cart-24h:p1")
    assert row["status"] == "pending" and row["attempts"] == 1 and "HTTP 500" in row["last_error"]
    assert row["next_attempt_at"] > clock.now  # backoff scheduled, not due yet
    assert dispatcher.retry_due() == []
    clock.advance(hours=1)
    second = dispatcher.retry_due()
    assert [r.status for r in second] == ["sent"] and second[0].attempts == 2
    assert len(srv.delivered) == 1 and len(srv.calls) == 4
    clock.advance(hours=1)
    assert dispatcher.retry_due() == []
    assert dispatcher.deliver(_msg()).status == "duplicate" and len(srv.calls) == 4


def test_gives_up_after_max_attempts(server_factory, store, clock) -> None:
    srv = server_factory(fail_first=100, fail_status=503)
    ledger = SendLedger(store, clock=clock, max_attempts=3)
    channel = WebhookChannel(srv.url, max_retries=0, sleep=lambda s: None)
    dispatcher = Dispatcher(ledger, {"webhook": channel}, require_consent=False, clock=clock)
    statuses = [dispatcher.deliver(_msg()).status]
    for _ in range(4):
        clock.advance(days=1)
        statuses += [r.status for r in dispatcher.retry_due()]
    assert statuses == ["retry", "retry", "failed"] and len(srv.calls) == 3
    assert ledger.get("cart-24h:p1")["last_error"].startswith("gave up after 3 attempts")


def test_unreachable_endpoint_is_retryable() -> None:
    channel = WebhookChannel(
        "http://127.0.0.1:9/never", max_retries=1, sleep=lambda s: None, timeout=2
    )
    result = channel.send(_msg())
    assert (
        result.status == "retry" and "ConnectError" in (result.error or "") and result.attempts == 2
    )
