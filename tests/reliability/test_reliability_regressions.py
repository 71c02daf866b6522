"""Regression tests for the bugs the fuzzers and schemathesis found (each failed before its fix)."""

from __future__ import annotations

from typing import Any

from reliability_support import Api, iso


def _ev(event_id: Any, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": "page_view",
        "timestamp": iso(),
        "user_id": "u1",
        **extra,
    }


def _stored(api: Api) -> int:
    with api.workspace.store.lock:
        return int(api.workspace.store.scalar("SELECT count(*) FROM events"))


def test_ids_with_tabs_nul_or_float_values_are_counted_as_the_store_keeps_them(api: Api) -> None:
    """collector.event_id_text stripped all Python whitespace, DuckDB's trim() only spaces
    (Zs): '\\t' was stored but answered as a duplicate. Floats like 1e20 are rendered
    differently by DuckDB ('100000000000000000000.0') than by orjson ('1e+20')."""
    ids = ["\t", "x\t", "z\n", "\x00", "a\x00", "\x1f", " y ", 1e20, 1e308, 0.1, ["a", 1.5e20]]
    r = api.client.post(
        "/v1/events/batch", json=[_ev(i) for i in ids], headers=api.headers("collector")
    )
    body = r.json()
    assert (body["accepted"], body["duplicates"], body["quarantined"]) == (len(ids), 0, 0), body
    assert _stored(api) == len(ids)
    # re-sending is recognised as duplicates of exactly those rows
    again = api.client.post(
        "/v1/events/batch", json=[_ev(i) for i in ids], headers=api.headers("collector")
    ).json()
    assert (again["accepted"], again["duplicates"]) == (0, len(ids)), again
    # only Unicode space separators are trimmed away, as by the pipeline
    blanks = api.client.post(
        "/v1/events/batch", json=[_ev("\u3000"), _ev("\u00a0 ")], headers=api.headers("collector")
    ).json()
    assert [e["reason"] for e in blanks["errors"]] == ["missing_event_id"] * 2


def test_a_quarantined_line_does_not_own_the_id_of_a_later_valid_line(api: Api) -> None:
    """The first line with an id was taken as its owner even when quarantined, so the valid
    line that was stored was answered as a duplicate (accepted 0, store +1)."""
    bad = _ev("same", timestamp="not a date")
    good = _ev("same")
    body = api.client.post(
        "/v1/events/batch", json=[bad, good], headers=api.headers("collector")
    ).json()
    assert (body["accepted"], body["duplicates"], body["quarantined"]) == (1, 0, 1), body
    assert body["errors"][0]["index"] == 0 and body["errors"][0]["reason"] == "invalid_timestamp"
    assert _stored(api) == 1


def test_segment_list_after_a_computation(api: Api) -> None:
    """GET /v1/segments answered 500 (KeyError 'name') once any segment had been computed."""
    root = api.workspace.project.root
    for f in (root / "segments").glob("*.yaml"):
        f.unlink()
    (root / "segments" / "viewers.yaml").write_text(
        "name: viewers\nrule:\n  event: page_view\n  last: 7d\n  gte: 1\n"
    )
    api.client.post("/v1/events", json=_ev("v1"), headers=api.headers("collector"))
    computed = api.client.post("/v1/segments/viewers/compute", headers=api.headers())
    assert computed.status_code == 200, computed.text
    listed = api.client.get("/v1/segments", headers=api.headers())
    assert listed.status_code == 200, listed.text
    (item,) = listed.json()["items"]
    assert item["name"] == "viewers" and item["file"] == "segments/viewers.yaml"
    assert item["size"] == 1 and "segment" not in item


def test_documented_statuses_and_date_times(api: Api) -> None:
    """404s of segment and API-key routes were undocumented; quarantined_at had no offset,
    which is not an RFC 3339 date-time as the schema promises."""
    paths = api.client.get("/openapi.json").json()["paths"]
    assert "404" in paths["/v1/segments/{name}"]["get"]["responses"]
    assert "404" in paths["/v1/segments/{name}/members"]["get"]["responses"]
    assert "404" in paths["/v1/admin/apikeys/{key_id}"]["delete"]["responses"]
    assert api.client.get("/v1/segments/nope", headers=api.headers()).status_code == 404
    assert api.client.delete("/v1/admin/apikeys/nope", headers=api.headers()).status_code == 404
    api.client.post("/v1/events", json=_ev(""), headers=api.headers("collector"))
    (item,) = api.client.get("/v1/quarantine", headers=api.headers()).json()["items"]
    assert item["quarantined_at"].endswith("+00:00"), item
