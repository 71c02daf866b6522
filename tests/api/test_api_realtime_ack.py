"""Real-time evaluation at acknowledgement: visible before the import, never counted twice,
and corrected from the store when the import disagrees."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from api_support import event, make_keys
from fastapi.testclient import TestClient

from microseg.api import ApiSettings, create_app
from microseg.api.collector import Collector
from microseg.api.fastcheck import FastValidator
from microseg.api.realtime import RealtimeBridge
from microseg.api.serving import CommittedBatch, ServingState
from microseg.errors import NotFoundError
from microseg.segments import RealtimeEvaluator, parse_segment
from microseg.store import utcnow
from microseg.workspace import Workspace

BUSY = {"name": "busy", "rule": {"event": "page_view", "last": "1h", "gte": 2}}
SEEN = {"name": "seen", "rule": {"event": "page_view", "last": "1h", "gte": 1}}


def bridge_for(ws: Workspace, *segments: dict[str, Any]) -> RealtimeBridge:
    parsed = [parse_segment(s) for s in segments]
    evaluator = RealtimeEvaluator.from_store(
        ws.store, ws.settings, parsed, start=utcnow(), history=True
    )
    return RealtimeBridge(
        evaluator,
        ws.store,
        FastValidator(ws.settings, ws.keys),
        evaluator.horizon,
        evaluator.session_types,
    )


def collector_for(
    ws: Workspace, bridge: RealtimeBridge, settings: ApiSettings | None = None
) -> tuple[Collector, ServingState]:
    state = ServingState.from_store(ws.store, ws.keys)
    state.subscribe(bridge)
    collector = Collector(ws, settings or ApiSettings(), state)
    collector.realtime = bridge
    return collector, state


def spool(collector: Collector, items: list[dict[str, Any]]) -> None:
    lines, ids, indexes, rejected = collector.encode(items)
    assert not rejected
    collector.submit(lines, ids, indexes, False, items)


def import_spooled(collector: Collector) -> None:
    """Run the importer over what is spooled (it was not started: nothing imported before)."""
    collector.start()
    collector.stop()


def segments_of(state: ServingState, ref: str) -> set[str]:
    return set(state.get(ref).segments)


def test_events_count_at_acknowledgement_and_once_after_the_import(project: Path) -> None:
    with Workspace.open(project) as ws:
        bridge = bridge_for(ws, BUSY, SEEN)
        collector, state = collector_for(ws, bridge)
        spool(collector, [event(1, user="r1")])
        # visible before any import: a brand-new visitor resolves and is in 'seen'
        assert segments_of(state, "user_id:r1") == {"seen"}
        assert ws.store.scalar("SELECT count(*) FROM events") == 0
        import_spooled(collector)
        assert ws.store.scalar("SELECT count(*) FROM events") == 1
        # the import's commit does not evaluate the same event again (else: 2 views -> busy)
        assert segments_of(state, "user_id:r1") == {"seen"}
        assert bridge.stats()["provisional_events"] == 1
        assert bridge.stats()["pending_events"] == 0
        # memberships are persisted with the commit
        pid = ws.profile_id("user_id:r1")
        assert ws.store.rows("SELECT segment FROM memberships WHERE profile_id = ?", [pid]) == [
            ("seen",)
        ]
        collector, _ = collector_for(ws, bridge)
        collector.state = state
        spool(collector, [event(2, user="r1")])
        assert segments_of(state, "user_id:r1") == {"seen", "busy"}
        import_spooled(collector)
        assert segments_of(state, "user_id:r1") == {"seen", "busy"}
        assert bridge.corrections == 0


def test_events_the_fast_check_leaves_are_evaluated_at_commit(project: Path) -> None:
    with Workspace.open(project) as ws:
        bridge = bridge_for(ws, SEEN)
        collector, state = collector_for(ws, bridge)
        odd = event(1, user="r9")
        odd["timestamp"] = (utcnow() - timedelta(minutes=3)).strftime("%Y-%m-%d %H:%M")
        spool(collector, [odd])
        assert bridge.stats()["provisional_events"] == 0
        import_spooled(collector)
        assert segments_of(state, "user_id:r9") == {"seen"}


def test_a_resent_old_event_is_corrected_from_the_store(project: Path, tmp_path: Path) -> None:
    with Workspace.open(project) as ws:
        old = event("old", user="r2")
        path = tmp_path / "old.jsonl"
        path.write_bytes(orjson.dumps(old) + b"\n")
        assert ws.import_events(path).inserted == 1
        bridge = bridge_for(ws, BUSY)  # knows r2's stored view from history
        collector, state = collector_for(ws, bridge)
        spool(collector, [old])  # a client re-sends it: its id is not in recent memory
        assert segments_of(state, "user_id:r2") == {"busy"}  # provisionally two views
        import_spooled(collector)
        # the import stored nothing new: the profile is re-read and leaves 'busy'
        assert segments_of(state, "user_id:r2") == set()
        assert bridge.corrections == 1
        pid = ws.profile_id("user_id:r2")
        assert not bridge.evaluator.is_member("busy", pid)  # type: ignore[attr-defined]
        assert ws.store.rows("SELECT segment FROM memberships WHERE profile_id = ?", [pid]) == []
        history = ws.store.rows(
            "SELECT change FROM membership_history WHERE profile_id = ? ORDER BY recorded_at", [pid]
        )
        assert [h[0] for h in history] == ["entered", "exited"]


def test_a_provisional_profile_the_import_never_creates_is_dropped(
    project: Path, tmp_path: Path
) -> None:
    with Workspace.open(project) as ws:
        path = tmp_path / "old.jsonl"
        path.write_bytes(orjson.dumps(event("x", user="known")) + b"\n")
        ws.import_events(path)
        bridge = bridge_for(ws, SEEN)
        collector, state = collector_for(ws, bridge)
        # a buggy client re-uses a stored event id for another, new user
        spool(collector, [event("x", user="ghost")])
        assert segments_of(state, "user_id:ghost") == {"seen"}
        import_spooled(collector)
        try:
            state.get("user_id:ghost")
            raise AssertionError("the never-stored profile is still served")
        except NotFoundError:
            pass
        assert all(
            pid == ws.profile_id("user_id:known") for pid in bridge.evaluator.members_of("seen")
        )  # type: ignore[attr-defined]


def test_duplicates_and_already_imported_segments_are_not_evaluated_twice(project: Path) -> None:
    with Workspace.open(project) as ws:
        bridge = bridge_for(ws, BUSY)
        state = ServingState.from_store(ws.store, ws.keys)
        first = event(1, user="r3")
        assert bridge.offer("seg-a", [first, first], state) == 1  # same id twice in a request
        assert bridge.offer("seg-b", [first], state) == 0  # re-sent while pending
        assert segments_of(state, "user_id:r3") == set()
        # a segment whose commit was already delivered is left alone (its commit evaluated it)
        bridge.discard("seg-c", state)
        assert bridge.offer("seg-c", [event(2, user="r3")], state) == 0
        assert bridge.stats()["pending_events"] == 1


def test_a_parked_segment_is_undone(project: Path) -> None:
    with Workspace.open(project) as ws:
        bridge = bridge_for(ws, SEEN)
        state = ServingState.from_store(ws.store, ws.keys)
        assert bridge.offer("seg-a", [event(1, user="r4")], state) == 1
        assert segments_of(state, "user_id:r4") == {"seen"}
        assert bridge.discard("seg-a", state) == 1  # the import gave up on the segment
        assert bridge.stats()["pending_events"] == 0
        assert not bridge.evaluator.members_of("seen")  # type: ignore[attr-defined]


def test_per_session_event_types_wait_for_the_import_session_id(project: Path) -> None:
    per_session = {
        "name": "binge",
        "rule": {"event": "page_view", "per_session": True, "gte": 3, "last": "1h"},
    }
    with Workspace.open(project) as ws:
        bridge = bridge_for(ws, per_session)
        state = ServingState.from_store(ws.store, ws.keys)
        assert bridge.offer("seg-a", [event(1, user="r5")], state) == 0
        assert bridge.offer("seg-a", [event(2, user="r5", session_id="s-1")], state) == 1


def test_membership_is_served_when_the_collector_answers(project: Path) -> None:
    """Through HTTP with the importer running: no waiting, no polling."""
    ws = Workspace.open(project)
    keys = make_keys(ws)
    bridge = bridge_for(ws, SEEN)
    app = create_app(ws, ApiSettings(sweep_seconds=3600), realtime=bridge)
    with TestClient(app) as client:
        collect = {"X-API-Key": keys["collector"]}
        decide = {"X-API-Key": keys["decision-reader"]}
        for i in range(15):
            r = client.post("/v1/events?wait=false", json=event(i, user=f"v{i}"), headers=collect)
            assert r.status_code == 202
            assert client.get(f"/v1/decide/v{i}", headers=decide).json()["segments"] == ["seen"]
    # leaving the client stopped the server, which imported everything spooled
    assert ws.store.scalar("SELECT count(*) FROM memberships WHERE segment = 'seen'") == 15
    assert bridge.corrections == 0
    ws.close()


def test_changes_wait_for_their_profile_and_die_with_an_erasure(project: Path) -> None:
    with Workspace.open(project) as ws:
        bridge = bridge_for(ws, SEEN)
        collector, state = collector_for(ws, bridge)
        spool(collector, [event(1, user="w1"), event(2, user="w2")])
        bridge.sweep(state)  # persists what it can: neither profile is stored yet
        assert ws.store.scalar("SELECT count(*) FROM memberships") == 0
        assert bridge.stats()["unsaved_changes"] == 2
        gone = state.get("user_id:w2").profile_id
        bridge.forget(gone)  # erased before its events were imported
        import_spooled(collector)
        rows = ws.store.rows("SELECT profile_id FROM memberships WHERE segment = 'seen'")
        assert rows == [(ws.profile_id("user_id:w1"),)]
        assert bridge.stats()["unsaved_changes"] == 0


def test_events_recovered_after_a_crash_reach_the_realtime_evaluator(project: Path) -> None:
    """A spool segment left by a killed server is imported at start, through the evaluator."""
    ws = Workspace.open(project)
    keys = make_keys(ws)
    spool_dir = project / ".microseg" / "spool"
    spool_dir.mkdir(parents=True, exist_ok=True)
    left = spool_dir / "seg-00000000000000000001-1-000001.jsonl"
    left.write_bytes(orjson.dumps(event("crash", user="c1")) + b"\n")
    bridge = bridge_for(ws, SEEN)  # bootstrapped before the leftover is imported, as serve does
    app = create_app(ws, ApiSettings(sweep_seconds=3600), realtime=bridge)
    with TestClient(app) as client:
        decide = {"X-API-Key": keys["decision-reader"]}
        assert client.get("/v1/decide/c1", headers=decide).json()["segments"] == ["seen"]
    assert not left.exists()
    ws.close()


def test_random_streams_through_the_fast_path_match_the_batch_sql(project: Path) -> None:
    """Valid, invalid, repeated and re-sent events in random batches: after the imports, the
    real-time memberships equal a batch computation over the stored events."""
    import random

    from microseg.segments import compute_segments
    from microseg.segments.membership import members

    rng = random.Random(7)
    rules = [
        BUSY,
        SEEN,
        {
            "name": "carted_pricey",
            "rule": {
                "event": "add_to_cart",
                "where": {"price": {"gte": 50}},
                "last": "2h",
                "gte": 1,
            },
        },
    ]
    with Workspace.open(project) as ws:
        bridge = bridge_for(ws, *rules)
        collector, state = collector_for(ws, bridge)
        sent: list[dict[str, Any]] = []
        for round_ in range(4):
            batch: list[dict[str, Any]] = []
            for i in range(60):
                kind = rng.random()
                if kind < 0.1 and sent:
                    item = dict(rng.choice(sent))  # a re-send (pending or already stored)
                else:
                    item = event(f"{round_}-{i}", user=f"r{rng.randrange(25)}")
                    item["event_type"] = rng.choice(["page_view", "add_to_cart", "product_view"])
                    item["timestamp"] = (
                        utcnow() - timedelta(minutes=rng.uniform(0, 150))
                    ).isoformat() + "Z"
                    if item["event_type"] == "add_to_cart":
                        item["price"] = rng.choice([10, 60, "75", "cheap", -1])
                    if kind > 0.95:
                        item["timestamp"] = "not a time"  # quarantined
                    sent.append(item)
                batch.append(item)
            for start in range(0, len(batch), 15):  # several requests per spool segment
                spool(collector, batch[start : start + 15])
            import_spooled(collector)
            collector, _ = collector_for(ws, bridge)
            collector.state = state
        assert bridge.stats()["provisional_events"] > 100  # the fast path did the work
        assert bridge.stats()["pending_events"] == 0
        parsed = [parse_segment(r) for r in rules]
        compute_segments(ws.store, ws.settings, parsed, utcnow())
        for seg in parsed:
            assert bridge.evaluator.members_of(seg.name) == members(ws.store, seg.name), seg.name  # type: ignore[attr-defined]


def test_bulk_batches_and_overload_wait_for_the_commit(project: Path) -> None:
    """Evaluation at acknowledgement is for interactive traffic: a batch above
    ack_eval_max_events, or any batch while too many events await their import, is
    evaluated when it commits — same memberships, later."""
    with Workspace.open(project) as ws:
        bridge = bridge_for(ws, SEEN)
        settings = ApiSettings(ack_eval_max_events=3, ack_eval_max_pending=4)
        collector, state = collector_for(ws, bridge, settings)
        spool(collector, [event(i, user=f"b{i}") for i in range(4)])  # bulk: 4 > 3
        assert bridge.pending_count() == 0
        spool(collector, [event(10 + i, user=f"s{i}") for i in range(3)])  # interactive
        assert bridge.pending_count() == 3
        spool(collector, [event(20, user="t0")])  # 3 pending < 4: still evaluated
        spool(collector, [event(21, user="t1")])  # 4 pending: overloaded, wait for commit
        assert bridge.pending_count() == 4
        assert segments_of(state, "user_id:t0") == {"seen"}
        import_spooled(collector)
        assert bridge.pending_count() == 0
        for user in ["b0", "b3", "s2", "t0", "t1"]:
            assert segments_of(state, f"user_id:{user}") == {"seen"}, user
        assert bridge.corrections == 0


def test_a_failure_during_evaluation_is_healed_at_commit(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the evaluator raises half-way through a request, the request still succeeds and
    the profiles involved are re-read from the store when the batch commits."""
    with Workspace.open(project) as ws:
        bridge = bridge_for(ws, BUSY)
        collector, state = collector_for(ws, bridge)
        evaluator = bridge.evaluator
        real = evaluator.on_event
        calls = {"n": 0}

        def flaky(row: Any, now: Any = None) -> Any:
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("evaluator bug")
            return real(row, now)

        monkeypatch.setattr(evaluator, "on_event", flaky)
        spool(collector, [event(1, user="h1"), event(2, user="h1")])  # second one fails
        monkeypatch.setattr(evaluator, "on_event", real)
        assert segments_of(state, "user_id:h1") == set()  # only one view counted so far
        import_spooled(collector)
        assert segments_of(state, "user_id:h1") == {"busy"}  # re-read: two stored views
        assert bridge.corrections == 1


def test_a_correction_keeps_events_still_pending_in_later_segments(
    project: Path, tmp_path: Path
) -> None:
    with Workspace.open(project) as ws:
        old = event("old", user="k1")
        path = tmp_path / "old.jsonl"
        path.write_bytes(orjson.dumps(old) + b"\n")
        ws.import_events(path)
        bridge = bridge_for(
            ws, {"name": "three", "rule": {"event": "page_view", "last": "1h", "gte": 3}}
        )
        state = ServingState.from_store(ws.store, ws.keys)
        state.subscribe(bridge)
        assert bridge.offer("seg-1", [old], state) == 1  # a re-send: the import will refuse it
        assert bridge.offer("seg-2", [event("new", user="k1")], state) == 1  # still pending
        assert segments_of(state, "user_id:k1") == {"three"}  # provisionally 3 views
        # seg-1 commits nothing new: k1 is re-read from the store (1 view) ...
        bridge(CommittedBatch("seg-1", _empty_events(ws), utcnow()), state)
        assert segments_of(state, "user_id:k1") == set()
        # ... and the pending view of seg-2 is evaluated again when seg-2 commits
        row = {
            **_stored_row(ws, event("new", user="k1")),
            "profile_id": ws.profile_id("user_id:k1"),
        }
        bridge(CommittedBatch("seg-2", pa.Table.from_pylist([row]), utcnow()), state)
        pid = ws.profile_id("user_id:k1")
        views = bridge.evaluator.profile(pid).events["page_view"]  # type: ignore[attr-defined]
        assert len(views) == 2  # the stored one + the new one, not lost by the correction


def _empty_events(ws: Workspace) -> pa.Table:
    return ws.store.con.sql(
        "SELECT e.*, i.profile_id FROM events e JOIN identities i ON i.id_key = e.id_key LIMIT 0"
    ).to_arrow_table()


def _stored_row(ws: Workspace, item: dict[str, Any]) -> dict[str, Any]:
    row = FastValidator(ws.settings, ws.keys).check(item, utcnow())
    assert row is not None
    return row


def test_membership_is_served_while_the_spool_fsync_is_still_running(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Visibility does not wait for the disk; the acknowledgement does."""
    import threading

    from microseg.api import spool as spool_mod

    real, stuck, release = spool_mod._sync_data, threading.Event(), threading.Event()

    def slow_sync(fd: int) -> None:
        stuck.set()
        assert release.wait(30)
        real(fd)

    monkeypatch.setattr(spool_mod, "_sync_data", slow_sync)
    ws = Workspace.open(project)
    keys = make_keys(ws)
    app = create_app(ws, ApiSettings(sweep_seconds=3600), realtime=bridge_for(ws, SEEN))
    with TestClient(app) as client:
        collect = {"X-API-Key": keys["collector"]}
        decide = {"X-API-Key": keys["decision-reader"]}
        answers: list[int] = []
        post = threading.Thread(
            target=lambda: answers.append(
                client.post(
                    "/v1/events?wait=false", json=event(1, user="w"), headers=collect
                ).status_code
            )
        )
        post.start()
        assert stuck.wait(30)
        assert client.get("/v1/decide/w", headers=decide).json()["segments"] == ["seen"]
        assert answers == []  # not acknowledged before its fsync
        release.set()
        post.join(30)
        assert answers == [202]
    ws.close()


def _until(check: Any, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_importer_lingers_only_while_every_event_was_evaluated(project: Path) -> None:
    with Workspace.open(project) as ws:
        bridge = bridge_for(ws, SEEN)
        collector, state = collector_for(ws, bridge, ApiSettings(import_linger_ms=60_000))
        spool(collector, [event(1, user="r1")])  # evaluated at acknowledgement
        assert not collector.spool.needs_import()
        collector.start()
        try:
            time.sleep(0.5)
            assert collector.committed_events == 0  # lingering; the membership is served
            assert segments_of(state, "user_id:r1") == {"seen"}
            odd = event(2, user="r2")  # the fast check leaves it: only the import shows it
            odd["timestamp"] = (utcnow() - timedelta(minutes=3)).strftime("%Y-%m-%d %H:%M")
            spool(collector, [odd])
            _until(lambda: collector.committed_events == 2)
            assert segments_of(state, "user_id:r2") == {"seen"}
            spool(collector, [event(3, user="r3")])
            time.sleep(0.3)
            assert collector.committed_events == 2  # lingering again
            items = [event(4, user="r4")]
            lines, ids, indexes, _ = collector.encode(items)
            ticket = collector.submit(lines, ids, indexes, True, items)  # waits for its commit
            assert ticket is not None and ticket.waiter is not None
            assert ticket.waiter.future.result(timeout=30)["accepted"] == 1
            assert collector.committed_events == 4
            spool(collector, [event(5, user="r5")])
            started = time.monotonic()
        finally:
            collector.stop()  # ends the linger and imports what is spooled
        assert time.monotonic() - started < 30
        assert collector.committed_events == 5
        assert ws.store.scalar("SELECT count(*) FROM events") == 5


def test_the_commit_confirms_in_chunks_and_a_resend_between_them_is_refused(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import microseg.api.realtime as realtime_mod

    monkeypatch.setattr(realtime_mod, "COMMIT_CHUNK", 3)
    with Workspace.open(project) as ws:
        bridge = bridge_for(ws, BUSY, SEEN)
        collector, state = collector_for(ws, bridge)
        items = [event(i, user=f"c{i % 4}") for i in range(10)]  # 2-3 page_views each
        spool(collector, items)
        assert bridge.stats()["pending_events"] == 10
        real = bridge._evaluating
        commits: list[int] = []
        resent: list[int] = []

        def evaluating(what: str, blocking: bool = True) -> Any:
            if what == "commit":
                commits.append(1)
                if len(commits) == 3:  # between the first and second chunk: a client re-sends
                    resent.append(bridge.offer("seg-later", [items[-1]], state))
            return real(what, blocking)

        monkeypatch.setattr(bridge, "_evaluating", evaluating)
        import_spooled(collector)
        # one hold to take the segment, ceil(10 / 3) chunks, one to settle the rest
        assert len(commits) == 2 + 4
        assert resent == [0]  # still pending under its own segment: not counted twice
        stats = bridge.stats()
        assert stats["pending_events"] == 0 and stats["provisional_events"] == 10
        assert bridge.corrections == 0
        for user in range(4):
            assert segments_of(state, f"user_id:c{user}") == {"seen", "busy"}


def test_placing_without_blocking_evaluates_now_or_leaves_the_rest(project: Path) -> None:
    """The event loop's placement: evaluated at once while the evaluation lock is free; while
    another thread holds it, nothing waits and the evaluation is left as ``rest``."""
    with Workspace.open(project) as ws:
        bridge = bridge_for(ws, SEEN)
        collector, state = collector_for(ws, bridge)
        first = [event(1, user="n1")]
        lines, ids, indexes, _ = collector.encode(first)
        placement = collector.place(lines, ids, indexes, False, first, blocking=False)
        assert placement.ticket is not None and placement.rest is None
        assert segments_of(state, "user_id:n1") == {"seen"}

        second = [event(2, user="n2")]
        lines, ids, indexes, _ = collector.encode(second)
        with bridge._lock:  # a commit or a sweep holds it
            started = time.monotonic()
            placement = collector.place(lines, ids, indexes, False, second, blocking=False)
            assert time.monotonic() - started < 1.0  # did not wait for the lock
        assert placement.rest is not None
        with pytest.raises(NotFoundError):  # not evaluated yet: not even known
            state.get("user_id:n2")
        assert bridge.stats()["lock_busy_offer"] == 1
        placement.rest()
        assert segments_of(state, "user_id:n2") == {"seen"}
        assert bridge.stats()["provisional_events"] == 2
        import_spooled(collector)
        assert ws.store.scalar("SELECT count(*) FROM events") == 2
        assert segments_of(state, "user_id:n2") == {"seen"}
        assert bridge.corrections == 0


def test_membership_writes_run_in_the_import_thread_while_the_collector_runs(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Workspace.open(project) as ws:
        bridge = bridge_for(ws, SEEN)
        collector, state = collector_for(ws, bridge)
        threads: list[str] = []
        real = bridge._write

        def write(changes: list[Any]) -> set[str]:
            threads.append(threading.current_thread().name)
            return real(changes)

        monkeypatch.setattr(bridge, "_write", write)
        collector.start()
        try:
            assert bridge.store_runner == collector.on_import_thread
            spool(collector, [event(1, user="w1")])
            deadline = time.monotonic() + 30
            while collector.committed_events < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert threads and all(t.startswith("microseg-import-db") for t in threads), threads
            # a caller holding the store's lock writes itself (the import thread would wait
            # for the lock, and the caller for the import thread); w2 is never imported, so
            # its change stays unsaved and every persist() below writes
            assert bridge.offer("seg-unimported", [event(2, user="w2")], state) == 1
            done = threading.Event()

            def persist_holding_the_store() -> None:
                with ws.store.lock:
                    bridge.persist()
                done.set()

            holder = threading.Thread(target=persist_holding_the_store, name="holder", daemon=True)
            holder.start()
            assert done.wait(10), "persist() deadlocked behind the store lock"
            assert threads[-1] == "holder"
        finally:
            collector.stop()
        pid = ws.profile_id("user_id:w1")
        assert ws.store.rows("SELECT segment FROM memberships WHERE profile_id = ?", [pid]) == [
            ("seen",)
        ]
        # once stopped, writes run in the caller's thread again
        assert bridge.store_runner is None
        threads.clear()
        assert bridge.persist() == 0  # w2 has no stored profile: kept for later
        assert threads == [threading.current_thread().name]
        assert bridge.stats()["unsaved_changes"] == 1
