"""The Workspace façade reaches every domain: one small project through all the wrappers."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from microseg.errors import NotFoundError
from microseg.synth import generate_events
from microseg.workspace import Workspace

AS_OF = datetime(2024, 3, 31)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("facade")
    events = root / "events.parquet"
    generate_events(events, 8_000, 400, seed=11)
    w = Workspace.init(root / "proj", "facade")
    for old in (w.project.root / "segments").glob("*.yaml"):
        old.unlink()
    (w.project.root / "segments" / "buyers.yaml").write_text(
        "name: buyers\nrule: {event: purchase, last: 60d}\n"
    )
    w.import_events(events)
    w.compute_traits(AS_OF)
    w.compute_segments(AS_OF)
    yield w
    w.close()


def _buyer(ws: Workspace) -> str:
    return str(ws.store.scalar("SELECT profile_id FROM memberships ORDER BY profile_id LIMIT 1"))


def test_measure_recommend_report(ws: Workspace, tmp_path: Path) -> None:
    kpis = ws.kpis(freq="W", end=AS_OF)
    assert {"segment", "period", "metric", "value", "users"} <= set(kpis.columns)
    assert {"(all)", "buyers"} <= set(kpis["segment"])
    recs = ws.recommend(_buyer(ws), k=5, strategy="popularity", as_of=AS_OF)
    assert 0 < len(recs) <= 5 and recs["rank"].tolist() == list(range(1, len(recs) + 1))
    html = ws.report(tmp_path / "report", as_of=AS_OF)
    assert html.exists() and "buyers" in html.read_text()
    outcomes, actions = ws.check_campaigns(as_of=AS_OF)
    assert outcomes == [] and actions == []
    with pytest.raises(NotFoundError, match="no journeys"):
        ws.journeys()


def test_privacy_wrappers(ws: Workspace) -> None:
    pid = _buyer(ws)
    ws.record_consent(pid, "email", True, source="test")
    assert ws.consent_state(pid, "email").status == "granted"
    exported = ws.export_subject(pid)
    assert exported and pid in str(exported)
    assert not ws.audit(about=pid).empty
    report = ws.run_retention(dry_run=True)
    assert report is not None
    ws.erase_subject(pid, "test request", compact=False, files=False)
    with pytest.raises(NotFoundError):
        ws.profile_id(pid)


def test_closing_an_ephemeral_workspace_deletes_its_folder_and_key_file() -> None:
    ws = Workspace.ephemeral()
    root = ws.project.root
    assert ws.keys is not None  # creates the key file in the temporary folder
    assert any(root.rglob("*")) and root.is_dir()
    ws.close()
    assert not root.exists()  # no key material left behind in the temp directory
    ws.close()  # twice is harmless


def test_closing_a_project_workspace_keeps_its_folder(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path / "proj", "kept")
    ws.close()
    assert (tmp_path / "proj" / "microseg.yaml").is_file()


def test_an_ephemeral_workspace_never_closed_leaves_no_folder_once_collected() -> None:
    import gc

    ws = Workspace.ephemeral()
    root = ws.project.root
    assert ws.keys is not None and root.is_dir()
    del ws
    gc.collect()
    assert not root.exists()
