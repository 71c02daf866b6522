"""Segment definitions over HTTP: one validator with the files, previews, members, explain."""

from __future__ import annotations

from api_support import Api, event

VIEWERS = {
    "name": "repeat_viewers",
    "rule": {"event": "product_view", "last": "7d", "gte": 2},
}


def _collect_views(api: Api) -> None:
    batch = [event(i, user="u1", event_type="product_view", product_id="p1") for i in range(3)]
    batch += [event(10, user="u2", event_type="product_view", product_id="p2")]
    r = api.client.post(
        "/v1/events/batch", json={"events": batch}, headers=api.headers("collector")
    )
    assert r.status_code == 200 and r.json()["accepted"] == 4, r.text


def test_save_preview_compute_members_explain_delete(api: Api) -> None:
    _collect_views(api)
    h = api.headers("analyst")
    preview = api.client.post("/v1/segments/preview", json=VIEWERS, headers=h)
    assert preview.status_code == 200, preview.text
    assert preview.json()["size"] == 1  # u1 viewed 3 times, u2 once

    saved = api.client.put("/v1/segments/repeat_viewers", json=VIEWERS, headers=h)
    assert saved.status_code == 201, saved.text
    assert saved.json()["size"] == 1
    path = api.workspace.project.root / "segments" / "repeat_viewers.yaml"
    assert "product_view" in path.read_text()  # the definition now lives in the project files
    assert api.client.put("/v1/segments/repeat_viewers", json=VIEWERS, headers=h).status_code == 200

    got = api.client.get("/v1/segments/repeat_viewers", headers=h).json()
    assert got["definition"]["rule"]["event"] == "product_view"
    listed = {s["name"] for s in api.client.get("/v1/segments", headers=h).json()["items"]}
    assert "repeat_viewers" in listed

    computed = api.client.post("/v1/segments/repeat_viewers/compute", headers=h)
    assert computed.status_code == 200, computed.text
    runs = {r["name"]: r for r in computed.json()["runs"]}
    assert runs["repeat_viewers"]["size"] == 1 and runs["repeat_viewers"]["entered"] == 1
    members = api.client.get("/v1/segments/repeat_viewers/members", headers=h).json()["items"]
    u1 = api.workspace.profile_id("user_id:u1")
    assert [m["profile_id"] for m in members] == [u1]
    history = api.client.get("/v1/segments/repeat_viewers/history", headers=h).json()["items"]
    assert len(history) == 1 and history[0]["profile_id"] == u1

    why = api.client.get("/v1/segments/repeat_viewers/explain/user_id:u2", headers=h)
    assert why.status_code == 200, why.text
    assert why.json()["member"] is False

    assert api.client.delete("/v1/segments/repeat_viewers", headers=h).status_code == 204
    assert not path.exists()
    gone = api.client.get("/v1/segments/repeat_viewers", headers=h)
    assert gone.status_code == 404 and gone.headers["content-type"].startswith(
        "application/problem+json"
    )


def test_bad_definitions_are_refused_with_the_cause(api: Api) -> None:
    h = api.headers("analyst")
    typo = {"name": "x", "rule": {"event": "product_veiw", "gte": 1}}
    r = api.client.post("/v1/segments/preview", json=typo, headers=h)
    assert r.status_code == 422 and "product_view" in r.text  # did you mean
    unknown_field = {"name": "x", "rule": {"trait": "a", "gtee": 1}}
    assert api.client.post("/v1/segments/preview", json=unknown_field, headers=h).status_code == 422
    mismatch = api.client.put("/v1/segments/other_name", json=VIEWERS, headers=h)
    assert mismatch.status_code == 422 and "name-mismatch" in mismatch.text


def test_hostile_names_are_inert(api: Api) -> None:
    _collect_views(api)
    h = api.headers("analyst")
    for name in ("Robert'); DROP TABLE events;--", "..", "UPPER", "a b"):
        r = api.client.put(f"/v1/segments/{name}", json={**VIEWERS, "name": name}, headers=h)
        assert r.status_code in (404, 405, 422), (name, r.status_code)
    injected = {"name": "inj", "rule": {"trait": "x'; DROP TABLE events;--", "eq": "1' OR '1'='1"}}
    r = api.client.post("/v1/segments/preview", json=injected, headers=h)
    assert r.status_code == 422  # unknown trait, named; nothing executed
    assert api.workspace.store.table_exists("events")
    # a saved file naming an unknown trait: explain refuses it with the cause, never a 500
    (api.workspace.project.root / "segments" / "broken.yaml").write_text(
        "name: broken\nrule:\n  trait: no_such_trait\n  eq: 1\n"
    )
    broken = api.client.get("/v1/segments/broken/explain/user_id:u1", headers=h)
    assert broken.status_code == 422 and "no_such_trait" in broken.text
    members = api.client.get("/v1/segments/x'%20OR%201=1/members", headers=h)
    assert members.status_code == 422


def test_roles_are_enforced(api: Api) -> None:
    assert api.client.get("/v1/segments").status_code == 401
    reader = api.client.get("/v1/segments", headers=api.headers("decision-reader"))
    assert reader.status_code == 403
    collector = api.client.put("/v1/segments/x", json=VIEWERS, headers=api.headers("collector"))
    assert collector.status_code == 403
