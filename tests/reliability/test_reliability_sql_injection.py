"""SQL injection through every entry point that reaches SQL: inert, verbatim, or refused.

Classic payloads (quotes, ``'; DROP TABLE events; --``, ``" OR 1=1``, backslashes, unicode
quotes, comments, NUL, placeholders) go through: event property values, ids and types via
the API and via CSV / JSON Lines imports; profile refs of /v1/profiles and /v1/decide;
quarantine filters; segment names, values, regexes and property names; trait definitions;
identity merge refs; content block names and text; experiment keys. Each must be stored and
matched verbatim as data where valid, refused with a 4xx / one-line error otherwise, and the
database must be intact afterwards (same tables, no rows lost).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from reliability_support import Api, assert_problem, iso

from microseg.config.sources import SourceSpec
from microseg.errors import MicrosegError, NotFoundError
from microseg.experiments.assignment import ExperimentSpec
from microseg.experiments.store import load_saved, save_experiment
from microseg.ingest.identity import merge_profiles
from microseg.personalize.content import BlockSpec, ContentRepo, render_block

PAYLOADS = [
    "'",
    "''",
    "'; DROP TABLE events; --",
    '" OR 1=1 --',
    "' OR '1'='1",
    "\\'; DROP TABLE profiles; --",
    "\\",
    "\u2019 OR \u20181\u2019=\u20181",
    "\u02bc; DROP TABLE identities; --",
    "/* comment */ 1",
    "-- x",
    "a\x00b",
    "x'); DELETE FROM events; --",
    "$1 ? %s",
    "1; ATTACH 'evil.db' AS e; --",
    "'||(SELECT version())||'",
]
IDS = list(range(len(PAYLOADS)))


def _snapshot(api: Api) -> dict[str, int]:
    store = api.workspace.store
    with store.lock:
        tables = [r[0] for r in store.rows("SELECT table_name FROM duckdb_tables()")]
        counts = {t: int(store.scalar(f'SELECT count(*) FROM "{t}"')) for t in tables}
        attached = store.scalar("SELECT count(*) FROM duckdb_databases() WHERE NOT internal")
    counts["__databases__"] = int(attached)
    return counts


def _intact(before: dict[str, int], after: dict[str, int]) -> None:
    """No table dropped, no database attached, no rows deleted (new rows are fine)."""
    assert set(before) <= set(after), set(before) - set(after)
    assert after["__databases__"] == before["__databases__"]
    shrunk = {t: (before[t], after[t]) for t in before if after[t] < before[t]}
    assert not shrunk, shrunk


def _seed(api: Api) -> None:
    """One profile per payload: its user id, url, category and product id are the payload."""
    events: list[dict[str, Any]] = []
    for i, p in enumerate(PAYLOADS):
        events.append(
            {
                "event_id": f"pv-{i}",
                "event_type": "page_view",
                "timestamp": iso(),
                "user_id": p,
                "url": p,
            }
        )
        events.append(
            {
                "event_id": f"prod-{i}",
                "event_type": "product_view",
                "timestamp": iso(),
                "user_id": p,
                "category": p,
                "product_id": p,
                "price": 5,
            }
        )
    r = api.client.post("/v1/events/batch", json=events, headers=api.headers("collector"))
    assert r.status_code == 200 and r.json()["accepted"] == len(events), r.text


@pytest.fixture
def seeded(api: Api) -> Api:
    _seed(api)
    return api


def test_event_values_ids_and_types_via_the_api_are_verbatim(seeded: Api) -> None:
    api, store = seeded, seeded.workspace.store
    before = _snapshot(api)
    with store.lock:
        rows = dict(store.rows("SELECT event_id, url FROM events WHERE event_type = 'page_view'"))
        users = dict(store.rows("SELECT event_id, user_id FROM events"))
    for i, p in enumerate(PAYLOADS):
        assert rows[f"pv-{i}"] == p and users[f"prod-{i}"] == p
    # payloads as event ids and event types: ids stored verbatim, unknown types quarantined
    r = api.client.post(
        "/v1/events/batch",
        json=[
            *(
                {"event_id": p, "event_type": "page_view", "timestamp": iso(), "user_id": "u"}
                for p in PAYLOADS
            ),
            *(
                {"event_id": f"t{i}", "event_type": p, "timestamp": iso(), "user_id": "u"}
                for i, p in enumerate(PAYLOADS)
            ),
        ],
        headers=api.headers("collector"),
    ).json()
    assert r["accepted"] == len(PAYLOADS) and r["quarantined"] == len(PAYLOADS), r
    assert {e["reason"] for e in r["errors"]} == {"unknown_event_type"}
    with store.lock:
        assert {x[0] for x in store.rows("SELECT event_id FROM events WHERE user_id = 'u'")} == set(
            PAYLOADS
        )
    _intact(before, _snapshot(api))


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_payloads_in_import_files_are_verbatim(api: Api, tmp_path: Path, fmt: str) -> None:
    before = _snapshot(api)
    rows = [
        {
            "event_id": f"f-{i}",
            "event_type": "page_view",
            "timestamp": iso(),
            "user_id": f"fu{i}",
            "url": p,
        }
        for i, p in enumerate(PAYLOADS)
    ]
    path = tmp_path / f"inj.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, list(rows[0]))
            writer.writeheader()
            writer.writerows({**r, "url": r["url"].replace("\x00", "")} for r in rows)
    with api.workspace.store.lock:
        result = api.workspace.import_events(path, source=f"inj-{fmt}", spec=SourceSpec(format=fmt))  # type: ignore[arg-type]
        got = dict(
            api.workspace.store.rows("SELECT event_id, url FROM events WHERE event_id LIKE 'f-%'")
        )
    assert result.inserted == len(PAYLOADS), result
    for i, p in enumerate(PAYLOADS):
        assert got[f"f-{i}"] == (p if fmt == "jsonl" else p.replace("\x00", ""))
    _intact(before, _snapshot(api))


def test_profile_refs_and_quarantine_filters_are_matched_literally(seeded: Api) -> None:
    api = seeded
    before = _snapshot(api)
    for p in PAYLOADS:
        pid = api.workspace.profile_id(f"user_id:{p}")
        for route, role in (("/v1/profiles/", "analyst"), ("/v1/decide/", "decision-reader")):
            # every byte percent-encoded ("/" too: refs are {ref:path} parameters)
            r = api.client.get(route + quote(f"user_id:{p}", safe=""), headers=api.headers(role))
            assert r.status_code == 200, (route, p, r.text)
            assert r.json()["profile_id"] == pid
            unknown = api.client.get(
                route + quote(p + "-nobody", safe=""), headers=api.headers(role)
            )
            assert_problem(unknown, 404)
        q = api.client.get(
            "/v1/quarantine",
            params={"reason": p, "source": p, "status": "all"},
            headers=api.headers("analyst"),
        )
        assert q.status_code == 200 and q.json()["items"] == [], q.text
        bad_status = api.client.get(
            "/v1/quarantine", params={"status": p}, headers=api.headers("analyst")
        )
        assert_problem(bad_status, 422)
    _intact(before, _snapshot(api))


def _preview(api: Api, rule: dict[str, Any]) -> Any:
    return api.client.post(
        "/v1/segments/preview", json={"name": "probe", "rule": rule}, headers=api.headers("analyst")
    )


def test_segment_names_values_regexes_and_properties(seeded: Api) -> None:
    api = seeded
    before = _snapshot(api)
    for p in PAYLOADS:
        # names: refused (lower_snake_case only), nothing written
        r = api.client.put(
            "/v1/segments/" + quote(p, safe=""),
            json={"rule": {"event": "page_view", "last": "7d", "gte": 1}},
            headers=api.headers("analyst"),
        )
        assert_problem(r, 404, 405, 422)
        # values: matched as data -> exactly the one profile whose url is the payload
        r = _preview(api, {"event": "page_view", "where": {"url": p}, "last": "7d", "gte": 1})
        assert r.status_code == 200, (p, r.text)
        assert r.json()["size"] == 1, (p, r.json())
        r = _preview(
            api,
            {
                "event": "product_view",
                "where": {"category": {"in": [p, "zz"]}},
                "last": "7d",
                "gte": 1,
            },
        )
        assert r.status_code == 200 and r.json()["size"] == 1, (p, r.text)
        # contains / regex / unknown property / unknown event type: size or a 422 problem
        r = _preview(
            api, {"event": "page_view", "where": {"url": {"contains": p}}, "last": "7d", "gte": 1}
        )
        assert r.status_code == 200 and r.json()["size"] >= 1, (p, r.text)
        r = _preview(
            api, {"event": "page_view", "where": {"url": {"regex": p}}, "last": "7d", "gte": 1}
        )
        assert r.status_code in (200, 422), (p, r.text)
        if r.status_code == 422:
            assert_problem(r, 422)
        assert_problem(
            _preview(api, {"event": "page_view", "where": {p: "x"}, "last": "7d", "gte": 1}), 422
        )
        assert_problem(_preview(api, {"event": p, "last": "7d", "gte": 1}), 422)
    assert not list((api.workspace.project.root / "segments").glob("*probe*"))
    _intact(before, _snapshot(api))


def test_trait_definitions_treat_payloads_as_data(seeded: Api) -> None:
    api = seeded
    ws = api.workspace
    lines = ["traits:"]
    for i, p in enumerate(PAYLOADS):
        lines += [
            f"  - name: hits_{i}",
            "    kind: count",
            "    events: [page_view]",
            f"    where: {{url: {json.dumps(p)}}}",
            f"  - name: like_{i}",
            "    kind: count",
            "    events: [product_view]",
            f"    where: {{category: {{like: {json.dumps(p)}}}}}",
        ]
    (ws.project.root / "traits.yaml").write_text("\n".join(lines) + "\n")
    before = _snapshot(api)
    with ws.store.lock:
        ws.compute_traits()
        frame = ws.trait_frame()
    for i, p in enumerate(PAYLOADS):
        pid = ws.profile_id(f"user_id:{p}")
        row = frame.set_index("profile_id").loc[pid]
        assert row[f"hits_{i}"] == 1, (p, row[f"hits_{i}"])
        assert row[f"like_{i}"] >= 1 or "%" in p or "_" in p, (p, row[f"like_{i}"])
    assert int(frame[f"hits_{PAYLOADS.index(chr(39))}"].fillna(0).sum()) == 1
    # a payload as a trait name is refused with a located, one-line-per-problem error
    (ws.project.root / "traits.yaml").write_text(
        f"traits:\n  - name: {json.dumps(PAYLOADS[2])}\n    kind: count\n"
    )
    with pytest.raises(MicrosegError) as err, ws.store.lock:
        ws.compute_traits()
    assert "traits.yaml" in str(err.value)
    _intact(before, _snapshot(api))


def test_merge_refs_content_names_and_experiment_keys(seeded: Api) -> None:
    api = seeded
    ws, store = api.workspace, api.workspace.store
    before = _snapshot(api)
    repo = ContentRepo(store)
    spec = BlockSpec.model_validate(
        {"variants": [{"id": "web", "channel": "web", "text": "Hi {{ name }}"}]}
    )
    with store.lock:
        for p in PAYLOADS:
            with pytest.raises(NotFoundError):
                merge_profiles(store, p + "-none", "user_id:also-none", settings=ws.settings)
            # check_name raises ValueError here (not a MicrosegError): reported to its owner
            with pytest.raises((MicrosegError, ValueError)):
                repo.save(p, spec)
            # the payload as content text and as render data stays text
            saved = repo.save(
                "promo",
                BlockSpec.model_validate(
                    {
                        "variants": [
                            {
                                "id": "web",
                                "channel": "web",
                                "text": p.replace("\x00", "") + " {{ name }}",
                            }
                        ]
                    }
                ),
            )
            block = repo.get("promo", saved)
            assert render_block(block, {"name": p}).text == p.replace("\x00", "") + " " + p
            # experiment keys are data: saved and loaded back verbatim
            save_experiment(store, ExperimentSpec(key=p, variants=[{"name": "a"}, {"name": "b"}]))
            assert load_saved(store, p).key == p
        keys = {r[0] for r in store.rows("SELECT experiment_key FROM experiments")}
    assert set(PAYLOADS) <= keys
    _intact(before, _snapshot(api))
