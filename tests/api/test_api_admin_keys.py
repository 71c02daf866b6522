"""Admin key listing: RFC 3339 date-times (with 'T' and an offset), never the secret."""

from __future__ import annotations

from datetime import datetime

from api_support import Api


def test_listed_keys_have_rfc3339_times_and_no_secret(api: Api) -> None:
    admin = api.headers("admin")
    created = api.client.post("/v1/admin/apikeys", json={"role": "collector"}, headers=admin)
    assert created.status_code == 201
    secret = created.json()["key"]
    assert (
        api.client.delete(
            f"/v1/admin/apikeys/{created.json()['key_id']}", headers=admin
        ).status_code
        == 204
    )
    listed = api.client.get("/v1/admin/apikeys", headers=admin)
    assert listed.status_code == 200 and secret not in listed.text
    for key in listed.json():
        for field in ("created_at", "revoked_at"):
            value = key[field]
            if value is not None:
                assert "T" in value and value.endswith("+00:00"), value
                assert datetime.fromisoformat(value).tzinfo is not None
    assert any(k["revoked_at"] for k in listed.json())
