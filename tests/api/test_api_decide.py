"""Decision endpoint and serving state: loaded from the store, updated by committed batches."""

from __future__ import annotations

from pathlib import Path

from api_support import Api, event, make_keys
from fastapi.testclient import TestClient

from microseg.api import ApiSettings, CommittedBatch, ServingState, create_app
from microseg.errors import NotFoundError
from microseg.workspace import Workspace


def _seed(project: Path) -> tuple[Workspace, dict[str, str]]:
    """Stored events, a traits table and memberships, as batch jobs would leave them."""
    ws = Workspace.open(project)
    keys = make_keys(ws)
    path = project / "seed.jsonl"
    import orjson

    path.write_bytes(b"".join(orjson.dumps(event(i, user=f"s{i}")) + b"\n" for i in range(3)))
    ws.import_events(path)
    pid = ws.profile_id("user_id:s1")
    ws.store.execute(
        "CREATE TABLE traits (profile_id VARCHAR, ltv DOUBLE, tier VARCHAR, last_seen TIMESTAMP)"
    )
    ws.store.execute(
        "INSERT INTO traits VALUES (?, 123.5, 'gold', TIMESTAMP '2026-01-02 03:04:05')", [pid]
    )
    if not ws.store.table_exists("memberships"):
        ws.store.execute(
            "CREATE TABLE memberships (segment VARCHAR, profile_id VARCHAR, entered_at TIMESTAMP)"
        )
    ws.store.execute(
        "INSERT INTO memberships VALUES ('vip', ?, now()), ('newsletter', ?, now())", [pid, pid]
    )
    return ws, keys


def test_decide_serves_traits_and_segments_loaded_at_startup(project: Path) -> None:
    ws, keys = _seed(project)
    with TestClient(create_app(ws, ApiSettings())) as client:
        h = {"X-API-Key": keys["decision-reader"]}
        body = client.get("/v1/decide/s1", headers=h).json()
        assert body["segments"] == ["newsletter", "vip"]
        assert body["traits"] == {"ltv": 123.5, "tier": "gold", "last_seen": "2026-01-02T03:04:05"}
        same = client.get(f"/v1/decide/{body['profile_id']}", headers=h).json()
        assert same == body == client.get("/v1/decide/user_id:s1", headers=h).json()
        other = client.get("/v1/decide/s2", headers=h).json()
        assert other["segments"] == [] and other["traits"] == {}
        missing = client.get("/v1/decide/user_id:ghost", headers=h)
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        view = client.get("/v1/profiles/s1", headers={"X-API-Key": keys["analyst"]}).json()
        assert view["segments"] == ["newsletter", "vip"] and view["traits"]["tier"] == "gold"
        assert view["identities"][0]["id_key"] == "user_id:s1"
        assert (
            client.get("/v1/profiles/nobody", headers={"X-API-Key": keys["analyst"]}).status_code
            == 404
        )
    ws.close()


def test_decide_does_not_read_the_store(project: Path) -> None:
    ws, keys = _seed(project)
    with TestClient(create_app(ws, ApiSettings())) as client:
        ws.store.execute("DROP TABLE traits")  # the serving state answers from memory
        body = client.get("/v1/decide/s1", headers={"X-API-Key": keys["analyst"]}).json()
        assert body["traits"]["tier"] == "gold"
    ws.close()


def test_subscribers_see_each_committed_batch_and_update_segments(api: Api) -> None:
    services = api.client.app.state.services  # type: ignore[attr-defined]
    seen: list[CommittedBatch] = []

    def realtime(batch: CommittedBatch, state: ServingState) -> None:
        seen.append(batch)
        rows = batch.events.select(["profile_id", "event_type"]).to_pylist()
        state.apply_changes(
            (r["profile_id"], "active_buyer", True) for r in rows if r["event_type"] == "purchase"
        )
        for r in rows:
            state.set_traits(r["profile_id"], {"last_event": r["event_type"]})

    def broken(batch: CommittedBatch, state: ServingState) -> None:
        raise RuntimeError("a plug-in bug")

    services.state.subscribe(broken)
    unsubscribe = services.state.subscribe(realtime)
    buy = event(1, user="b1", event_type="purchase", revenue=10)
    r = api.client.post(
        "/v1/events/batch", json=[buy, event(2, user="b2"), buy], headers=api.headers("collector")
    )
    assert r.json()["accepted"] == 2
    assert len(seen) == 1 and seen[0].events.num_rows == 2  # the duplicate is not re-announced
    h = api.headers("decision-reader")
    b1 = api.client.get("/v1/decide/b1", headers=h).json()
    assert b1["segments"] == ["active_buyer"] and b1["traits"] == {"last_event": "purchase"}
    assert api.client.get("/v1/decide/b2", headers=h).json()["segments"] == []
    unsubscribe()
    api.client.post("/v1/events", json=event(3), headers=api.headers("collector"))
    assert len(seen) == 1


def test_state_resolution_rules() -> None:
    state = ServingState()
    batch_ids = [("user_id:7", "p1"), ("device_id:7", "p2"), ("anonymous_id:a", "p2")]
    from datetime import datetime

    import pyarrow as pa

    table = pa.table({"profile_id": ["p1", "p2"]})
    state.apply_batch(CommittedBatch("seg", table, datetime(2026, 1, 1)), batch_ids)
    assert state.resolve("p1") == "p1"
    assert state.resolve("anonymous_id:a") == "p2"
    assert state.resolve("a") == "p2"
    try:
        state.resolve("7")
    except NotFoundError as exc:
        assert "matches 2 profiles" in str(exc)
    else:
        raise AssertionError("ambiguous bare id must not resolve")
    assert state.apply_changes([("p1", "x", True), ("p1", "x", True), ("p1", "y", False)]) == 1
    assert state.get("user_id:7").segments == frozenset({"x"})


def test_reload_picks_up_batch_results(api: Api) -> None:
    api.client.post("/v1/events", json=event(1), headers=api.headers("collector"))
    pid = api.workspace.profile_id("user_id:u1")
    store = api.workspace.store
    if not store.table_exists("memberships"):
        store.execute(
            "CREATE TABLE memberships (segment VARCHAR, profile_id VARCHAR, entered_at TIMESTAMP)"
        )
    store.execute("INSERT INTO memberships VALUES ('late', ?, now())", [pid])
    h = api.headers("decision-reader")
    assert api.client.get("/v1/decide/u1", headers=h).json()["segments"] == []
    assert (
        api.client.post("/v1/admin/serving/reload", headers=api.headers("admin")).json()["profiles"]
        == 1
    )
    assert api.client.get("/v1/decide/u1", headers=h).json()["segments"] == ["late"]


def test_openapi_has_domain_tags_and_security(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()
    tags = {t for op in doc["paths"].values() for spec in op.values() for t in spec.get("tags", [])}
    assert {"events", "decide", "profiles", "quarantine", "health", "admin"} <= tags
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    secured = [
        op for path, ops in doc["paths"].items() for op in ops.values() if path != "/v1/health"
    ]
    assert secured and all(op["security"] == [{"bearer": []}, {"apiKey": []}] for op in secured)
    assert "security" not in doc["paths"]["/v1/health"]["get"]
    assert all(p.startswith("/v1/") for p in doc["paths"])
    assert api.client.get("/docs").status_code == 200
