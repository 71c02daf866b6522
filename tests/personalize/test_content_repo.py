"""Content repository: version history in the store, project content files, profile context."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from microseg.errors import DefinitionError, NotFoundError
from microseg.personalize.content import (
    ContentRepo,
    ProfileContextLoader,
    load_project_content,
    parse_content,
    pii_context,
    read_pii,
    render_block,
)
from microseg.privacy.crypto import KeyRing
from microseg.store import Store

V1 = """\
blocks:
  welcome:
    tags: [onboarding]
    placeholders: {first_name: friend}
    variants:
      - {id: web, channel: web, html: "<h1>Welcome, {{ first_name }}</h1>"}
"""
V2 = V1.replace("Welcome,", "Welcome back,")


@pytest.fixture()
def store():
    s = Store(None)
    yield s
    s.close()


def test_a_change_creates_a_new_version_and_old_ones_stay(store: Store) -> None:
    repo = ContentRepo(store)
    spec1 = parse_content(V1).blocks["welcome"]
    assert repo.save("welcome", spec1) == 1
    assert repo.save("welcome", spec1) == 1  # unchanged: no new version
    assert repo.save("welcome", parse_content(V2).blocks["welcome"], actor="ana") == 2
    assert repo.latest_version("welcome") == 2
    old = render_block(repo.get("welcome", 1), {"first_name": "Ana"})
    new = render_block(repo.get("welcome"), {"first_name": "Ana"})
    assert (old.html, old.version) == ("<h1>Welcome, Ana</h1>", 1)
    assert (new.html, new.version) == ("<h1>Welcome back, Ana</h1>", 2)
    hist = repo.history("welcome")
    assert list(hist["version"]) == [2, 1] and list(hist["created_by"]) == ["ana", "library"]
    listed = repo.list()
    assert listed.to_dict(orient="records")[0] | {"updated_at": None} == {
        "block": "welcome",
        "version": 2,
        "tags": "onboarding",
        "variants": "web/any",
        "description": "",
        "updated_at": None,
    }
    assert list(repo.latest(tags=["onboarding"])) == ["welcome"] and repo.latest(tags=["x"]) == {}
    assert store.scalar("SELECT count(*) FROM audit_log WHERE action = 'content.save'") == 2


def test_lookups_explain_what_is_missing(store: Store) -> None:
    repo = ContentRepo(store)
    repo.save("welcome", parse_content(V1).blocks["welcome"])
    with pytest.raises(NotFoundError, match="did you mean 'welcome'"):
        repo.get("welcom")
    with pytest.raises(NotFoundError, match="no version 7 \\(latest is 1\\)"):
        repo.get("welcome", 7)
    with pytest.raises(NotFoundError):
        repo.history("nope")


def test_project_files_sync_and_duplicates_are_refused(tmp_path: Path, store: Store) -> None:
    (tmp_path / "content").mkdir()
    (tmp_path / "content" / "a.yaml").write_text(V1)
    (tmp_path / "content" / "b.yml").write_text(
        "blocks:\n  promo:\n    variants:\n      - {id: p, channel: push, text: 'Sale!'}\n"
    )
    repo = ContentRepo(store)
    assert repo.sync_project(tmp_path) == {"welcome": (1, True), "promo": (1, True)}
    assert repo.sync_project(tmp_path) == {"welcome": (1, False), "promo": (1, False)}
    (tmp_path / "content" / "a.yaml").write_text(V2)
    assert repo.sync_project(tmp_path)["welcome"] == (2, True)
    (tmp_path / "content" / "c.yaml").write_text(V1)
    with pytest.raises(DefinitionError) as info:
        load_project_content(tmp_path)
    problem = info.value.problems[0]
    assert problem.file.endswith("c.yaml") and problem.line == 2
    assert "already defined in" in problem.message


def test_all_problems_of_all_files_are_reported(tmp_path: Path) -> None:
    (tmp_path / "content").mkdir()
    (tmp_path / "content" / "a.yaml").write_text(V1.replace("}}</h1>", "</h1>"))
    (tmp_path / "content" / "b.yaml").write_text("blocks: [not, a, mapping]\n")
    with pytest.raises(DefinitionError) as info:
        load_project_content(tmp_path)
    files = sorted(Path(p.file or "").name for p in info.value.problems)
    assert files == ["a.yaml", "b.yaml"]
    a = next(p for p in info.value.problems if (p.file or "").endswith("a.yaml"))
    assert a.line == 6 and "syntax error" in a.message


def _profile(store: Store, keys: KeyRing) -> str:
    pid = "p_1"
    now = datetime(2026, 5, 1, 12, 0)
    store.execute("INSERT INTO profiles VALUES (?, ?, ?, NULL)", [pid, now, now])
    store.execute(
        "INSERT INTO identities VALUES ('user_id:u1', 'user_id', 'u1', ?, ?, ?, 'test', NULL)",
        [pid, now, now],
    )
    for name, value, num in [
        ("city", "Porto", None),
        ("renewal_date", "2026-06-30", None),
        ("orders", None, 3.0),
    ]:
        store.execute(
            "INSERT INTO profile_attributes VALUES (?, ?, ?, ?, 'crm', ?)",
            [pid, name, value, num, now],
        )
    for field, value in [("first_name", "Marta"), ("email", "marta@example.com")]:
        store.execute(
            "INSERT INTO pii_vault VALUES (?, ?, ?, ?, ?)",
            [
                pid,
                field,
                keys.encrypt(value, pii_context(pid, field)),
                keys.token(value, field),
                now,
            ],
        )
    store.ensure_columns("events", {"product_id": "string", "price": "number"})
    rows = [
        ("e1", "purchase", "2026-04-01 10:00", "p9", 30.0),
        ("e2", "add_to_cart", "2026-03-30 10:00", "p8", 5.0),  # before the purchase: not abandoned
        ("e3", "add_to_cart", "2026-04-10 10:00", "p7", 12.5),
        ("e4", "add_to_cart", "2026-04-11 10:00", "p6", 7.0),
    ]
    for eid, etype, ts, prod, price in rows:
        store.execute(
            "INSERT INTO events (event_id, event_type, ts, received_at, user_id, id_key, product_id, price)"
            " VALUES (?, ?, CAST(? AS TIMESTAMP), CAST(? AS TIMESTAMP), 'u1', 'user_id:u1', ?, ?)",
            [eid, etype, ts, ts, prod, price],
        )
    return pid


def test_profile_context_feeds_placeholders(store: Store) -> None:
    keys = KeyRing.generate()
    pid = _profile(store, keys)
    assert read_pii(store, keys, pid, ["first_name", "phone"]) == {"first_name": "Marta"}
    ctx = ProfileContextLoader(store, keys).load(pid, as_of=datetime(2026, 5, 1))
    assert ctx["first_name"] == "Marta" and ctx["location"] == "Porto" and ctx["orders"] == 3.0
    assert ctx["last_purchase"]["product_id"] == "p9"
    assert [i["product_id"] for i in ctx["abandoned_items"]] == ["p6", "p7"]
    spec = parse_content(
        "blocks:\n  renew:\n    placeholders: {first_name: there}\n    variants:\n"
        "      - id: e\n        channel: email\n"
        "        subject: '{{ first_name }}, renew by {{ renewal_date|date(\"%d %b\") }}'\n"
        '        text: \'{{ abandoned_items|map(attribute="product_id")|join(",") }} in {{ location }}\'\n'
    ).blocks["renew"]
    out = render_block(spec, ctx, channel="email")
    assert out.subject == "Marta, renew by 30 Jun" and out.text == "p6,p7 in Porto"
    # as_of before the purchase: no last purchase yet, the early cart item counts
    early = ProfileContextLoader(store, keys).load(pid, as_of=datetime(2026, 3, 31))
    assert "last_purchase" not in early and [i["product_id"] for i in early["abandoned_items"]] == [
        "p8"
    ]


def test_save_refuses_bad_templates_from_any_path(store: Store) -> None:
    """The API path (no YAML file) goes through the same template checks as the files."""
    from microseg.personalize.content import BlockSpec

    repo = ContentRepo(store)
    bad = BlockSpec.model_validate(
        {"variants": [{"id": "w", "channel": "web", "html": "ok\n{{ ''.__class__ }}"}]}
    )
    with pytest.raises(DefinitionError) as info:
        repo.save("promo", bad, source_file="api")
    problem = info.value.problems[0]
    assert problem.file == "api" and problem.path == "promo.variants.0.html"
    assert (
        "attribute '__class__' is not allowed" in problem.message
        and "template line 2" in problem.message
    )
    assert repo.latest_version("promo") == 0  # nothing stored
