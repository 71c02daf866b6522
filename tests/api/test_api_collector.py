"""The event collector: durable, idempotent, quarantining, refusing garbage with problems."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from api_support import Api, event, iso, make_keys
from fastapi.testclient import TestClient

from microseg.api import ApiSettings, create_app
from microseg.api.spool import repair
from microseg.workspace import Workspace

if TYPE_CHECKING:
    from microseg.api.collector import Collector


def _collect_and_wait(collector: Collector, n: int) -> dict[str, Any]:
    """Submit ``n`` events through a started collector and wait for their commit's outcome."""
    items = [event(i) for i in range(n)]
    lines, ids, indexes, _ = collector.encode(items)
    ticket = collector.submit(lines, ids, indexes, True, items)
    assert ticket is not None and ticket.waiter is not None
    outcome: dict[str, Any] = ticket.waiter.future.result(timeout=30)
    return outcome


def _events(ws: Workspace) -> int:
    return int(ws.store.scalar("SELECT count(*) FROM events"))


def test_batch_counts_and_reasons_are_exact(api: Api) -> None:
    batch = [
        event(1),
        event(2),
        {**event(3), "event_type": "teleport"},  # unknown event type
        {**event(4), "timestamp": "not a time"},
        {**event(5), "time_spent": "long"},  # declared number
        7,  # not an object
        event(1),  # duplicate within the batch
        {**event(6), "user_id": "undefined"},  # blocked placeholder -> no identity
    ]
    r = api.client.post(
        "/v1/events/batch", json={"events": batch}, headers=api.headers("collector")
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "committed"
    assert (body["received"], body["accepted"], body["duplicates"], body["quarantined"]) == (
        8,
        2,
        1,
        5,
    )
    reasons = {e["index"]: e["reason"] for e in body["errors"]}
    assert reasons == {
        2: "unknown_event_type",
        3: "invalid_timestamp",
        4: "invalid_type",
        5: "malformed_json",
        7: "missing_identity",
    }
    assert _events(api.workspace) == 2
    q = api.client.get("/v1/quarantine", headers=api.headers("analyst")).json()["items"]
    assert sorted(i["reason"] for i in q) == sorted(reasons.values())
    teleport = next(i for i in q if i["reason"] == "unknown_event_type")
    assert teleport["record"]["event_id"] == "e3" and teleport["source"].startswith("http:seg-")


def test_resending_is_idempotent(api: Api) -> None:
    batch = {"events": [event(i) for i in range(50)]}
    h = api.headers("collector")
    first = api.client.post("/v1/events/batch", json=batch, headers=h).json()
    second = api.client.post("/v1/events/batch", json=batch, headers=h).json()
    assert (first["accepted"], first["duplicates"]) == (50, 0)
    assert (second["accepted"], second["duplicates"]) == (0, 50)
    single = api.client.post("/v1/events", json=event(7), headers=h).json()
    assert (single["accepted"], single["duplicates"]) == (0, 1)
    assert _events(api.workspace) == 50
    # a bad event resent is not quarantined twice either
    bad = {**event(99), "event_type": "teleport"}
    for _ in range(2):
        assert api.client.post("/v1/events", json=bad, headers=h).json()["quarantined"] == 1
    items = api.client.get(
        "/v1/quarantine?reason=unknown_event_type", headers=api.headers("analyst")
    ).json()["items"]
    assert len(items) == 2  # one per request segment, each with its own source


def test_async_mode_acknowledges_spool_then_commits(api: Api) -> None:
    h = api.headers("collector")
    r = api.client.post(
        "/v1/events/batch?wait=false", json={"events": [event(i) for i in range(20)]}, headers=h
    )
    assert r.status_code == 202
    assert r.json()["status"] == "spooled" and r.json()["accepted"] is None
    deadline = time.monotonic() + 30

    def committed() -> int:
        stats = api.client.get("/v1/admin/stats", headers=api.headers("admin")).json()
        return int(stats["collector"]["committed_events"])

    while committed() < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _events(api.workspace) == 20
    assert (
        api.client.get("/v1/decide/u3", headers=api.headers("decision-reader")).status_code == 200
    )


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "slug"),
    [
        ("/v1/events/batch", b"{oops", {}, 400, "malformed-json"),
        ("/v1/events/batch", b"", {}, 400, "malformed-json"),
        ("/v1/events/batch", b'"just a string"', {}, 422, "not-a-batch"),
        ("/v1/events/batch", b'{"events": {"a": 1}}', {}, 422, "not-a-batch"),
        ("/v1/events", b"[1, 2]", {}, 422, "not-an-object"),
        ("/v1/events", b"\xff\xfe garbage", {}, 400, "malformed-json"),
        ("/v1/events", b"{}", {"Content-Type": "text/csv"}, 415, "unsupported-media-type"),
        (
            "/v1/events/batch",
            orjson.dumps({"events": [{"event_id": str(i)} for i in range(101)]}),
            {},
            413,
            "batch-too-large",
        ),
        ("/v1/events", b'{"x": "' + b"a" * 70_000 + b'"}', {}, 413, "too-large"),
        ("/v1/events/batch?wait=maybe", b"[]", {}, 422, "validation-error"),
    ],
)
def test_garbage_is_refused_with_problem_json(
    api: Api, path: str, body: bytes, headers: dict[str, str], status: int, slug: str
) -> None:
    h = {"Content-Type": "application/json", **api.headers("collector"), **headers}
    r = api.client.post(path, content=body, headers=h)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert (
        problem["type"].endswith("/" + slug) and problem["status"] == status and problem["detail"]
    )
    assert _events(api.workspace) == 0


def test_oversized_event_in_batch_is_rejected_by_index(project: Path) -> None:
    ws = Workspace.open(project)
    keys = make_keys(ws)
    app = create_app(ws, ApiSettings(max_event_bytes=1024))
    with TestClient(app) as client:
        big = {**event(2), "url": "x" * 2000}
        r = client.post(
            "/v1/events/batch",
            json=[event(1), big, event(3)],
            headers={"X-API-Key": keys["collector"]},
        )
        body = r.json()
        assert (body["accepted"], body["rejected"], body["quarantined"]) == (2, 1, 0)
        assert body["errors"] == [
            {"index": 1, "reason": "event_too_large", "detail": body["errors"][0]["detail"]}
        ]
    ws.close()


def test_leftover_spool_is_imported_at_startup_and_torn_tail_cut(project: Path) -> None:
    spool = project / ".microseg" / "spool"
    spool.mkdir(parents=True)
    lines = b"".join(orjson.dumps(event(i)) + b"\n" for i in range(30))
    (spool / "seg-00000000000000000001-1-000001.jsonl").write_bytes(
        lines + b'{"event_id": "torn", "ev'
    )
    ws = Workspace.open(project)
    keys = make_keys(ws)
    with TestClient(create_app(ws, ApiSettings())) as client:
        assert _events(ws) == 30
        assert not list(spool.glob("seg-*"))
        assert (
            client.get("/v1/decide/user_id:u29", headers={"X-API-Key": keys["analyst"]}).status_code
            == 200
        )
        assert ws.store.scalar("SELECT count(*) FROM quarantine") == 0  # the torn line was cut
    ws.close()


def test_committed_leftover_is_not_imported_again(project: Path) -> None:
    ws = Workspace.open(project)
    keys = make_keys(ws)
    with TestClient(create_app(ws, ApiSettings())) as client:
        client.post("/v1/events/batch", json=[event(1)], headers={"X-API-Key": keys["collector"]})
    name = ws.store.scalar("SELECT segment FROM spool_commits")
    batches = ws.store.scalar("SELECT count(*) FROM import_batches")
    spool = project / ".microseg" / "spool"
    (spool / name).write_bytes(orjson.dumps(event(1)) + b"\n")  # as if the crash came before unlink
    with TestClient(create_app(ws, ApiSettings())):
        pass
    assert not (spool / name).exists()
    assert ws.store.scalar("SELECT count(*) FROM import_batches") == batches
    ws.close()


def test_repair_keeps_complete_lines(tmp_path: Path) -> None:
    seg = tmp_path / "s.jsonl"
    seg.write_bytes(b'{"a":1}\n{"b":2}\n{"c"')
    assert repair(seg) == 2
    assert seg.read_bytes() == b'{"a":1}\n{"b":2}\n'
    assert repair(seg) == 2


def test_email_is_tokenised_and_resolvable(api: Api) -> None:
    ev = {
        "event_id": "m1",
        "event_type": "page_view",
        "timestamp": iso(),
        "email": "Ann@Example.com",
    }
    assert (
        api.client.post("/v1/events", json=ev, headers=api.headers("collector")).json()["accepted"]
        == 1
    )
    stored = api.workspace.store.rows("SELECT email_token, id_key FROM events")
    assert stored[0][0].startswith("tok_") and "ann" not in str(stored).lower()
    r = api.client.get("/v1/decide/email:ann@example.com", headers=api.headers("decision-reader"))
    assert r.status_code == 200


def test_segments_rotate_at_the_size_limit(project: Path) -> None:
    ws = Workspace.open(project)
    keys = make_keys(ws)
    with TestClient(create_app(ws, ApiSettings(max_segment_events=10))) as client:
        r = client.post(
            "/v1/events/batch",
            json=[event(i) for i in range(25)],
            headers={"X-API-Key": keys["collector"]},
        )
        assert r.json()["accepted"] == 25
        r = client.post(
            "/v1/events/batch?wait=false",
            json=[event(i) for i in range(25, 60)],
            headers={"X-API-Key": keys["collector"]},
        )
        assert r.status_code == 202
    assert _events(ws) == 60  # shutdown drains the spool
    assert ws.store.scalar("SELECT count(*) FROM spool_commits") >= 2
    ws.close()


def test_an_event_without_id_is_quarantined_even_alone_in_its_segment(api: Api) -> None:
    """Ids make retries idempotent: a collected event without one is refused as
    missing_event_id whatever else shares its spool segment (a file without an id column
    would get generated ids instead)."""
    lone = {"event_type": "page_view", "timestamp": iso(), "user_id": "u-noid"}
    r = api.client.post("/v1/events", json=lone, headers=api.headers("collector"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["duplicates"], body["quarantined"]) == (0, 0, 1)
    assert [e["reason"] for e in body["errors"]] == ["missing_event_id"]
    store = api.workspace.store
    assert store.scalar("SELECT count(*) FROM events WHERE user_id = 'u-noid'") == 0
    assert store.rows("SELECT reason FROM quarantine") == [("missing_event_id",)]


def test_the_importer_survives_an_unexpected_error(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug-class exception in one import attempt (a SystemError from a library killed the
    importer thread once) is logged and retried; the thread keeps importing."""
    from microseg.api.collector import Collector

    ws = Workspace.open(project)
    real = ws.import_events
    calls = {"n": 0}

    def flaky(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise SystemError("bad argument to internal function")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ws, "import_events", flaky)
    collector = Collector(ws, ApiSettings())
    collector.start()
    outcome = _collect_and_wait(collector, 5)
    assert outcome["status"] == "committed" and outcome["accepted"] == 5
    assert collector.alive() and "SystemError" in (collector.last_error or "")
    collector.stop()
    assert _events(ws) == 5
    ws.close()


def test_startup_objects_are_frozen_and_gc_pauses_reported(project: Path) -> None:
    import gc

    from microseg.api.collector import Collector

    ws = Workspace.open(project)
    before = gc.get_freeze_count()
    collector = Collector(ws, ApiSettings())
    collector.start()
    assert gc.get_freeze_count() > before  # full collections no longer scan them
    gc.collect()
    pauses = collector.stats()["gc_pauses"]
    assert pauses["gen2"]["collections"] >= 1 and pauses["gen2"]["max_ms"] >= 0
    assert pauses["frozen_objects"] == gc.get_freeze_count()
    collector.stop()
    assert gc.get_freeze_count() == 0 and collector.gc_pauses not in gc.callbacks
    off = Collector(ws, ApiSettings(gc_freeze_at_start=False))
    off.start()
    assert gc.get_freeze_count() == 0
    off.stop()
    ws.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority: Linux")
def test_imports_run_in_the_nicer_thread(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from microseg.api.collector import Collector
    from microseg.api.priority import thread_nice

    ws = Workspace.open(project)
    base = thread_nice()
    assert base is not None
    seen: list[tuple[str, int | None]] = []
    real = ws.import_events

    def spy(*args: object, **kwargs: object) -> object:  # where it ran, then import for real
        seen.append((threading.current_thread().name, thread_nice()))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ws, "import_events", spy)
    collector = Collector(ws, ApiSettings(import_nice=4))
    collector.start()
    outcome = _collect_and_wait(collector, 3)
    collector.stop()
    assert outcome["status"] == "committed" and outcome["accepted"] == 3
    assert seen[0] == ("microseg-import-db_0", min(19, base + 4))
    assert threading.current_thread().name != seen[0][0] and thread_nice() == base
    assert _events(ws) == 3
    ws.close()


def test_without_real_time_evaluation_the_importer_does_not_linger(project: Path) -> None:
    from microseg.api.collector import Collector

    ws = Workspace.open(project)
    collector = Collector(ws, ApiSettings(import_linger_ms=60_000))  # no real-time bridge
    items = [event(i) for i in range(2)]
    lines, ids, indexes, _ = collector.encode(items)
    ticket = collector.submit(lines, ids, indexes, False, items)
    assert ticket is not None and ticket.where is not None and ticket.where.urgent
    assert collector.spool.needs_import()
    collector.start()
    deadline = time.monotonic() + 30
    while collector.committed_events < 2:
        assert time.monotonic() < deadline, "the import lingered"
        time.sleep(0.02)
    collector.stop()
    assert _events(ws) == 2
    ws.close()
