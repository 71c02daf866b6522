"""HTTP privacy endpoints: roles, export, correction, consents, erasure, audit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from privacy_support import PEOPLE, populate

from microseg.api import ApiSettings, create_app
from microseg.api.keys import ROLES, create_key
from microseg.api.routers import privacy
from microseg.privacy.consent import consent_state
from microseg.workspace import Workspace


class Client:
    def __init__(self, client: TestClient, ws: Workspace, keys: dict[str, str]) -> None:
        self.client, self.ws, self.keys = client, ws, keys

    def call(self, method: str, url: str, role: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.keys[role]}"}
        return self.client.request(method, "/v1" + url, headers=headers, **kwargs)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[Client, dict[str, str]]]:
    root = tmp_path / "proj"
    Workspace.init(root, "privacy").close()
    ws = Workspace.open(root, actor="api")
    pids = populate(ws, tmp_path)
    keys = {role: create_key(ws.store, ws.keys, role, name=role)[1] for role in ROLES}
    app = create_app(ws, ApiSettings())
    if not any(getattr(r, "path", "") == "/v1/audit" for r in app.routes):
        app.include_router(privacy.router, prefix="/v1")  # until app.py includes it
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Client(client, ws, keys), pids
    ws.close()


def test_roles_are_enforced(api: tuple[Client, dict[str, str]]) -> None:
    c, _ = api
    ref = "user_id:" + PEOPLE[0]["user_id"]
    body = {"purpose": "ads", "granted": True, "source": "banner"}
    expected = {
        ("GET", f"/subjects/{ref}/export", None): {"admin": 200, "analyst": 403, "collector": 403},
        ("POST", f"/subjects/{ref}/erase", None): {"analyst": 403, "collector": 403},
        ("PATCH", f"/subjects/{ref}", None): {"analyst": 403, "decision-reader": 403},
        ("GET", f"/consents/{ref}", None): {"analyst": 200, "collector": 403, "admin": 200},
        ("POST", f"/consents/{ref}", "c"): {"collector": 201, "analyst": 403, "admin": 201},
        ("GET", "/audit", None): {"admin": 200, "analyst": 403},
    }
    for (method, url, has_body), roles in expected.items():
        for role, status in roles.items():
            r = c.call(method, url, role, json=body if has_body else {"reason": "x"})
            assert r.status_code == status, (method, url, role, r.text)
    assert c.client.get(f"/v1/consents/{ref}").status_code == 401


def test_consent_export_correct_erase_and_audit(api: tuple[Client, dict[str, str]]) -> None:
    c, pids = api
    person = PEOPLE[1]
    pid = pids[person["user_id"]]
    ref = "email:" + person["email"]
    r = c.call(
        "POST",
        f"/consents/{ref}",
        "collector",
        json={"purpose": "email_marketing", "granted": False, "source": "banner"},
    )
    assert r.status_code == 201 and r.json()["profile_id"] == pid
    assert consent_state(c.ws.store, pid, "email_marketing").status == "revoked"
    got = c.call("GET", f"/consents/{pid}", "analyst").json()
    assert [s["status"] for s in got["current"]] == ["revoked"] and len(got["history"]) == 2
    bad = c.call(
        "POST",
        f"/consents/{pid}",
        "admin",
        json={"purpose": "Bad Name", "granted": True, "source": "x"},
    )
    assert bad.status_code in {400, 422} and "lower_snake_case" in bad.text
    r = c.call("PATCH", f"/subjects/{pid}", "admin", json={"attributes": {"city": "Lund"}})
    assert r.status_code == 200 and r.json()["corrected"][0]["field"] == "city"
    export = c.call("GET", f"/subjects/{pid}/export", "admin").json()
    assert export["personal_data"]["email"] == person["email"]
    assert {a["name"]: a["value"] for a in export["profile_attributes"]} == {"city": "Lund"}
    audit = c.call("GET", "/audit", "admin", params={"action": "pii.decrypt", "about": pid}).json()
    assert audit["entries"] and audit["entries"][0]["actor"].startswith("api:")
    assert c.call("GET", "/subjects/user_id:nobody/export", "admin").status_code == 404
    r = c.call("POST", f"/subjects/{pid}/erase", "admin", json={"reason": "ticket 7"})
    assert r.status_code == 200, r.text
    assert r.json()["keys_shredded"] == 1 and r.json()["rows_deleted"]["events"] == 6
    assert c.call("GET", f"/subjects/{pid}/export", "admin").status_code == 404
    assert c.call("GET", f"/profiles/{pid}", "analyst").status_code == 404
    erased = c.call("GET", "/audit", "admin", params={"action": "subject.*"}).json()["entries"]
    assert {e["action"] for e in erased} >= {"subject.erase", "subject.export", "subject.correct"}
    assert all(
        pid not in str(e)
        for e in c.call("GET", "/audit", "admin", params={"limit": 1000}).json()["entries"]
    )
    assert c.call("POST", f"/subjects/{pid}/erase", "admin", json={}).status_code == 422
