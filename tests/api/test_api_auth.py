"""API keys, roles, rate limits and problem+json errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from api_support import Api, event
from fastapi.testclient import TestClient
from pydantic import SecretStr

from microseg.api import ApiSettings, create_app
from microseg.api.keys import create_key
from microseg.errors import ConfigError
from microseg.workspace import Workspace

PUBLIC = {"/v1/health"}


def _concrete(path: str) -> str:
    return path.replace("{ref}", "u1").replace("{key_id}", "abc")


def test_every_endpoint_needs_a_key(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    checked = 0
    for path, operations in paths.items():
        if path in PUBLIC:
            continue
        for method in operations:
            r = api.client.request(method, _concrete(path))
            assert r.status_code == 401, (method, path, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.headers["www-authenticate"].startswith("Bearer")
            r = api.client.request(method, _concrete(path), headers={"X-API-Key": "msk_nope"})
            assert r.status_code == 401
            checked += 1
    assert checked >= 10


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/decide/u1", {"admin", "analyst", "decision-reader"}),
        ("GET", "/v1/profiles/u1", {"admin", "analyst"}),
        ("GET", "/v1/quarantine", {"admin", "analyst"}),
        ("POST", "/v1/events/batch", {"admin", "collector"}),
        ("GET", "/v1/admin/stats", {"admin"}),
        ("GET", "/v1/admin/apikeys", {"admin"}),
    ],
)
def test_role_matrix(api: Api, method: str, path: str, allowed: set[str]) -> None:
    for role in api.keys:
        kwargs = {"json": {"events": []}} if method == "POST" else {}
        r = api.client.request(method, path, headers=api.headers(role), **kwargs)
        if role in allowed:
            assert r.status_code not in (401, 403), (role, path, r.text)
        else:
            assert r.status_code == 403, (role, path, r.text)
            assert r.json()["type"].endswith("/forbidden")


def test_both_headers_work_and_health_is_public(api: Api) -> None:
    key = api.keys["decision-reader"]
    assert api.client.get("/v1/decide/x", headers={"X-API-Key": key}).status_code == 404
    assert (
        api.client.get("/v1/decide/x", headers={"Authorization": f"Bearer {key}"}).status_code
        == 404
    )
    r = api.client.get("/v1/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert api.client.get("/openapi.json").json()["info"]["title"] == "microseg"


def test_keys_are_stored_hashed(api: Api) -> None:
    secret = api.keys["admin"].split("_", 2)[2]
    dump = api.workspace.store.rows("SELECT * FROM api_keys")
    assert len(dump) == 4
    assert all(secret not in str(row) for row in dump)


def test_admin_creates_and_revokes_keys(api: Api) -> None:
    r = api.client.post(
        "/v1/admin/apikeys",
        json={"role": "collector", "name": "edge"},
        headers=api.headers("admin"),
    )
    assert r.status_code == 201
    new = r.json()
    ok = api.client.post(
        "/v1/events/batch", json={"events": [event(1)]}, headers={"X-API-Key": new["key"]}
    )
    assert ok.status_code == 200 and ok.json()["accepted"] == 1
    assert (
        api.client.delete(
            f"/v1/admin/apikeys/{new['key_id']}", headers=api.headers("admin")
        ).status_code
        == 204
    )
    gone = api.client.post(
        "/v1/events/batch", json={"events": []}, headers={"X-API-Key": new["key"]}
    )
    assert gone.status_code == 401
    again = api.client.delete(f"/v1/admin/apikeys/{new['key_id']}", headers=api.headers("admin"))
    assert again.status_code == 404 and again.headers["content-type"] == "application/problem+json"
    bad = api.client.post("/v1/admin/apikeys", json={"role": "root"}, headers=api.headers("admin"))
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["body", "role"]


def test_rate_limit_returns_429_problem(project: Path) -> None:
    ws = Workspace.open(project)
    _, key = create_key(ws.store, ws.keys, "decision-reader", rate_per_second=1)
    app = create_app(ws, ApiSettings(rate_limit_per_second=1, rate_limit_burst=3))
    with TestClient(app) as client:
        codes = [
            client.get("/v1/decide/x", headers={"X-API-Key": key}).status_code for _ in range(6)
        ]
        assert codes[:3] == [404, 404, 404]
        assert codes[3:] == [429, 429, 429]
        r = client.get("/v1/decide/x", headers={"X-API-Key": key})
        assert r.headers["content-type"] == "application/problem+json"
        assert int(r.headers["retry-after"]) >= 1
    ws.close()


@pytest.mark.parametrize("weak", ["", "changeme", "dev", "short-but-random-1"])
def test_weak_bootstrap_key_refused_outside_dev(project: Path, weak: str) -> None:
    with Workspace.open(project) as ws, pytest.raises(ConfigError, match="MICROSEG_API_ADMIN_KEY"):
        create_app(ws, ApiSettings(admin_key=SecretStr(weak)))


def test_no_keys_refused_outside_dev_but_dev_mode_accepts_dev_key(project: Path) -> None:
    with Workspace.open(project) as ws:
        with pytest.raises(ConfigError, match="no API keys"):
            create_app(ws, ApiSettings())
        app = create_app(ws, ApiSettings(dev=True))
        with TestClient(app) as client:
            assert client.get("/v1/admin/stats", headers={"X-API-Key": "dev"}).status_code == 200
            assert client.get("/v1/admin/stats", headers={"X-API-Key": "nope"}).status_code == 401


def test_strong_bootstrap_key_from_environment(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    strong = "k" * 8 + "Zq81-x0PmVa9sLrT2"
    monkeypatch.setenv("MICROSEG_API_ADMIN_KEY", strong)
    with Workspace.open(project) as ws, TestClient(create_app(ws, ApiSettings())) as client:
        assert (
            client.get("/v1/admin/stats", headers={"Authorization": f"Bearer {strong}"}).status_code
            == 200
        )


def test_unknown_route_and_method_are_problems(api: Api) -> None:
    r = api.client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    r = api.client.put("/v1/events/batch", headers=api.headers("collector"))
    assert r.status_code == 405 and r.json()["status"] == 405


def test_unexpected_errors_are_500_problems_without_internals(api: Api) -> None:
    def boom() -> None:
        raise RuntimeError("secret internal state")

    api.client.app.add_api_route("/v1/boom", boom)  # type: ignore[attr-defined]
    r = api.client.get("/v1/boom")
    assert r.status_code == 500 and r.headers["content-type"] == "application/problem+json"
    assert "secret" not in r.text and r.json()["type"].endswith("/internal-error")
