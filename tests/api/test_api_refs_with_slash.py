"""Ids may hold "/" (URLs, paths, "team/42"): every endpoint taking a profile ref reaches them,
whether the client sends the slash raw or percent-encoded."""

from __future__ import annotations

from urllib.parse import quote

import orjson
from api_support import Api, event


def _seed(api: Api, user: str) -> str:
    path = api.workspace.project.root / "slash.jsonl"
    path.write_bytes(orjson.dumps(event("slash1", user=user)) + b"\n")
    api.workspace.import_events(path)
    return api.workspace.profile_id(f"user_id:{user}")


def test_profile_refs_with_slashes_reach_every_endpoint(api: Api) -> None:
    user = "team/42/ann"
    pid = _seed(api, user)
    reloaded = api.client.post("/v1/admin/serving/reload", headers=api.headers("admin"))
    assert reloaded.status_code == 200, reloaded.text
    for ref in (f"user_id:{user}", quote(f"user_id:{user}", safe=":"), user):
        decided = api.client.get(f"/v1/decide/{ref}", headers=api.headers("decision-reader"))
        assert decided.status_code == 200, (ref, decided.text)
        assert decided.json()["profile_id"] == pid
        shown = api.client.get(f"/v1/profiles/{ref}", headers=api.headers("analyst"))
        assert shown.status_code == 200 and shown.json()["profile_id"] == pid
        consents = api.client.get(f"/v1/consents/{ref}", headers=api.headers("analyst"))
        assert consents.status_code == 200, consents.text
        exported = api.client.get(f"/v1/subjects/{ref}/export", headers=api.headers("admin"))
        assert exported.status_code == 200, exported.text
    # an unknown id with a slash is a clean 404 problem, not a routing miss
    missing = api.client.get("/v1/decide/user_id:no/body", headers=api.headers("decision-reader"))
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert "no/body" in missing.json()["detail"]


def test_dashboard_explain_route_is_not_swallowed_by_the_profile_route(api: Api) -> None:
    user = "org/7"
    pid = _seed(api, user)
    (api.workspace.project.root / "segments" / "viewers.yaml").write_text(
        "name: viewers\nrule:\n  event: page_view\n  last: 30d\n  gte: 1\n"
    )
    page = api.client.get(f"/v1/dashboard/profiles/user_id:{user}", headers=api.headers("analyst"))
    assert page.status_code == 200, page.text
    for url in (
        f"/v1/dashboard/profiles/user_id:{user}/explain/viewers",
        f"/v1/segments/viewers/explain/user_id:{user}",
    ):
        why = api.client.get(url, headers=api.headers("analyst"))
        assert why.status_code == 200, (url, why.text)
        assert pid in why.text and "viewers" in why.text
