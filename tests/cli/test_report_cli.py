"""`microseg report`, `kpis show` and `campaigns status|check` through CliRunner on a fresh app,
on a synthetic project and on a customer sample of the real Online Retail data."""

from __future__ import annotations

import base64
import csv
import gzip
import io
import sys
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import typer
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from microseg.cli import STATE
from microseg.cli import report as cli_mod
from microseg.experiments.assignment import ExperimentSpec, VariantSpec
from microseg.experiments.store import assign_profiles, record_exposures, save_experiment
from microseg.report import build_report
from microseg.workspace import Workspace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "measure"))
import kpis_support as ks

runner = CliRunner()
AS_OF = "2024-02-12T08:00:00"
SECTIONS = ["segments", "kpis", "experiments", "attribution", "campaigns"]
GUARDS = """\
name: vip_newsletter
segments: [vip]
guards:
  - {name: floor, segment: vip, metric: conversion_rate, below: 1.0, min_users: 10}
  - {name: bounce, segment: "(all)", metric: bounce_rate, above: 0.99, action: notify}
"""


class _ReportParser(HTMLParser):
    """Sections (data-section), images (data URI + file) and the text of .empty paragraphs."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[tuple[str, str, str]] = []  # section, src, file
        self.empty: dict[str, str] = {}
        self._in_empty = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and a.get("data-section"):
            self.sections.append(str(a["data-section"]))
        if tag == "img":
            self.images.append((self.sections[-1], str(a.get("src")), str(a.get("data-file"))))
        self._in_empty = tag == "p" and a.get("class") == "empty"

    def handle_data(self, data: str) -> None:
        if self._in_empty and data.strip():
            self.empty[self.sections[-1]] = data.strip()
            self._in_empty = False


def _parse(path: Path) -> _ReportParser:
    parser = _ReportParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _check_png(raw: bytes) -> tuple[int, int]:
    assert raw.startswith(b"\x89PNG\r\n\x1a\n") and len(raw) > 1000
    with Image.open(io.BytesIO(raw)) as img:
        img.verify()
    with Image.open(io.BytesIO(raw)) as img:
        assert img.format == "PNG"
        return img.size


def _check_images(report: _ReportParser, folder: Path) -> None:
    for _, src, file in report.images:
        assert src.startswith("data:image/png;base64,")
        raw = base64.b64decode(src.split(",", 1)[1])
        w, h = _check_png(raw)
        assert w > 100 and h > 100
        assert (folder / file).read_bytes() == raw  # the PNG file next to the report


@pytest.fixture()
def app(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setattr(cli_mod, "console", Console(width=250))
    monkeypatch.setattr(cli_mod, "err_console", Console(width=250, stderr=True))
    a = typer.Typer()
    cli_mod.register(a)
    return a


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "proj"
    with Workspace.init(root, "synthetic") as ws:
        ks.build(ws)
        ws.store.execute(
            "INSERT INTO memberships SELECT 'vip', profile_id, now() FROM profiles"
            " WHERE profile_id < 'p0040'"
        )
        save_experiment(
            ws.store,
            ExperimentSpec(
                key="hero_banner",
                variants=[VariantSpec(name="generic"), VariantSpec(name="tailored")],
                control="generic",
            ),
        )
        ids = [f"p{u:04d}" for u in range(ks.N_USERS)]
        assign_profiles(ws.store, "hero_banner", ids)
        record_exposures(
            ws.store,
            "hero_banner",
            pd.DataFrame({"profile_id": ids, "exposed_at": pd.Timestamp(ks.START)}),
        )
    (root / "segments" / "vip.yaml").write_text(
        "name: vip\nrule:\n  bucket: {salt: vip, of: 100, range: [0, 25]}\n"
    )
    (root / "campaigns" / "vip_newsletter.yaml").write_text(GUARDS)
    monkeypatch.setitem(STATE, "project", root)
    return root


def test_report_on_a_synthetic_project(app: typer.Typer, project: Path) -> None:
    out = project / "out"
    res = runner.invoke(app, ["report", "--out", str(out), "--as-of", AS_OF])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output
    report = _parse(out / "report.html")
    assert report.sections == SECTIONS
    by_section = {s: [f for sec, _, f in report.images if sec == s] for s in SECTIONS}
    assert {"segments_sizes.png", "segments_trend.png", "segments_overlap.png"} <= set(
        by_section["segments"]
    )
    assert by_section["kpis"] == ["kpis_over_time.png"]
    html = (out / "report.html").read_text()
    for metric in ("conversion_rate", "email_open_rate", "content_ctr", "bounce_rate"):
        assert f"<td>{metric}</td>" in html  # drawn, and defined in the KPI table
    assert by_section["experiments"] == ["experiment_hero_banner.png"]
    assert by_section["attribution"] == ["attribution.png"]  # email sends are touchpoints
    assert report.empty == {"campaigns": "No campaign state recorded (no guard has acted yet)."}
    _check_images(report, out)
    html = (out / "report.html").read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html
    # guards act, and the campaigns section shows it
    dry = runner.invoke(app, ["campaigns", "check", "--as-of", AS_OF])
    assert dry.exit_code == 0, dry.output
    assert "1 rule(s) triggered; dry run" in dry.output and "pause" in dry.output
    done = runner.invoke(app, ["campaigns", "check", "--apply", "--as-of", AS_OF])
    assert done.exit_code == 0, done.output
    assert "vip_newsletter: floor -> pause: paused" in done.output
    status = runner.invoke(app, ["campaigns", "status"])
    assert "paused" in status.output and "guard floor" in status.output
    res = runner.invoke(app, ["report", "--out", str(out), "--as-of", AS_OF])
    assert res.exit_code == 0
    assert "campaigns" not in _parse(out / "report.html").empty
    resumed = runner.invoke(app, ["campaigns", "resume", "vip_newsletter", "--share", "0.5"])
    assert resumed.exit_code == 0, resumed.output
    status = runner.invoke(app, ["campaigns", "status"])
    assert "active" in status.output and "0.5" in status.output
    bad = runner.invoke(app, ["campaigns", "pause", "vip_newsleter"])
    assert bad.exit_code == 1 and "did you mean 'vip_newsletter'" in bad.output


def test_report_on_an_empty_project_says_so(
    app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "empty"
    Workspace.init(root, "empty").close()
    monkeypatch.setitem(STATE, "project", root)
    res = runner.invoke(app, ["report", "--out", str(root / "r")])
    assert res.exit_code == 0, res.output
    report = _parse(root / "r" / "report.html")
    assert report.sections == SECTIONS and report.images == []
    assert set(report.empty) == set(SECTIONS)
    none = runner.invoke(app, ["campaigns", "check"])
    assert none.exit_code == 0 and "no guard rules declared" in none.output
    bad = runner.invoke(app, ["report", "--freq", "fortnight", "--out", str(root / "r")])
    assert bad.exit_code == 1 and "unknown report frequency" in bad.output


def test_kpis_show_tables_plots_and_errors(app: typer.Typer, project: Path) -> None:
    res = runner.invoke(
        app, ["kpis", "show", "--segment", "vip", "--segment", "(all)", "--as-of", AS_OF]
    )
    assert res.exit_code == 0, res.output
    assert "conversion_rate" in res.output and "2024-02-05" in res.output and "vip" in res.output
    png = project / "conv.png"
    res = runner.invoke(
        app, ["kpis", "show", "-m", "conversion_rate", "--plot", str(png), "--as-of", AS_OF]
    )
    assert res.exit_code == 0, res.output
    _check_png(png.read_bytes())
    html = project / "conv.html"
    res = runner.invoke(app, ["kpis", "show", "-m", "bounce_rate", "--plot", str(html)])
    assert res.exit_code == 0, res.output
    text = html.read_text()
    # plotly.js inlined: no external script (the library merely mentions a CDN default)
    assert "Plotly.newPlot" in text and "<script src=" not in text and len(text) > 1_000_000
    csv_out = project / "kpis.csv"
    assert runner.invoke(app, ["kpis", "show", "--csv", str(csv_out)]).exit_code == 0
    assert list(pd.read_csv(csv_out).columns) == ["segment", "period", "metric", "value", "users"]
    bad = runner.invoke(app, ["kpis", "show", "-m", "conversion"])
    assert bad.exit_code == 1 and "did you mean 'conversion_rate'" in bad.output
    two = runner.invoke(app, ["kpis", "show", "-m", "sessions", "-m", "revenue", "--plot", "x.png"])
    assert two.exit_code == 1 and "exactly one --metric" in two.output
    seg = runner.invoke(app, ["kpis", "show", "--segment", "vipp"])
    assert seg.exit_code == 1 and "did you mean 'vip'" in seg.output
    listed = runner.invoke(app, ["kpis", "metrics"])
    assert "email_click_rate" in listed.output


def _retail_sample(data_dir: Path, dest: Path, every: int) -> pd.DataFrame:
    """All lines of every ``every``-th customer (whole purchase histories kept)."""
    src = data_dir / "online_retail_uci" / "online_retail.csv.gz"
    rows = []
    with gzip.open(src, "rt", encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        for row in reader:
            if row[6] and int(float(row[6])) % every == 0:
                rows.append(row)
    with dest.open("w", newline="") as out:
        w = csv.writer(out)
        w.writerow(header)
        w.writerows(rows)
    return pd.DataFrame(rows, columns=header)


@pytest.mark.parametrize("every", [25, pytest.param(1, marks=pytest.mark.slow, id="all-customers")])
def test_report_on_online_retail_sample(tmp_path: Path, data_dir: Path, every: int) -> None:
    from microseg.demo.run import RETAIL_AS_OF, RETAIL_SEGMENTS, _project_segments, write_project

    root = tmp_path / "retail"
    write_project(root)
    raw = _retail_sample(data_dir, root / "sample.csv", every=every)
    with Workspace.open(root) as ws:
        ws.import_events(root / "sample.csv", source="online_retail")
        ws.resolve_identities()
        ws.compute_traits(as_of=RETAIL_AS_OF)
        segs = _project_segments(ws)
        ws.compute_segments(as_of=RETAIL_AS_OF, segments=[segs[n] for n in RETAIL_SEGMENTS])
        path = build_report(ws, root / "report", as_of=RETAIL_AS_OF)
        from microseg.measure.kpis import segment_kpis

        kpis = segment_kpis(ws.store, segments=["(all)"], as_of=RETAIL_AS_OF)
    report = _parse(path)
    assert report.sections == SECTIONS
    files = {f for _, _, f in report.images}
    assert {"segments_sizes.png", "segments_overlap.png", "kpis_over_time.png"} <= files
    _check_images(report, path.parent)
    # weekly active customers and revenue agree with pandas on the raw file (London -> UTC)
    ts = pd.to_datetime(raw["InvoiceDate"]).dt.tz_localize("Europe/London").dt.tz_convert(None)
    raw = raw.assign(week=ts.dt.to_period("W-SUN").dt.start_time)
    stored = raw  # repeated identical lines are separate events (no event id in the file)
    active = stored.groupby("week")["CustomerID"].nunique()
    got = kpis[kpis["metric"] == "active_users"].set_index("period")["value"]
    got = got[got > 0]
    assert got.to_dict() == {k: float(v) for k, v in active.items()}
    revenue = (
        stored.assign(r=stored["Quantity"].astype(float) * stored["UnitPrice"].astype(float))
        .groupby("week")["r"]
        .sum()
    )
    rev = kpis[kpis["metric"] == "revenue"].set_index("period")["value"]
    assert rev[revenue.index].to_numpy() == pytest.approx(revenue.to_numpy(), rel=1e-9, abs=1e-6)
    assert datetime(2011, 12, 5) in set(got.index)


def test_report_escapes_names_from_the_data(tmp_path: Path) -> None:
    ws = Workspace.ephemeral()
    hostile = "<script>alert(1)</script>"
    for seg, pid in ((hostile, "p1"), (hostile, "p2"), ("plain", "p1")):
        ws.store.execute("INSERT INTO memberships VALUES (?, ?, now())", [seg, pid])
        ws.store.execute(
            "INSERT INTO membership_history VALUES (?, ?, 'entered', now(), 'r', 'batch', now())",
            [seg, pid],
        )
    for seg in (hostile, "plain"):
        ws.store.execute(
            "INSERT INTO segments (name, definition, checksum, updated_at)"
            " VALUES (?, '{}', 'x', now())",
            [seg],
        )
    html = build_report(ws, tmp_path / "r").read_text()
    assert hostile not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    report = _parse(tmp_path / "r" / "report.html")
    assert {f for _, _, f in report.images} == {
        "segments_sizes.png",
        "segments_trend.png",
        "segments_overlap.png",
    }
    assert report.empty["kpis"] == "No events yet, so no KPIs."
    _check_images(report, tmp_path / "r")


def test_attribution_sample_keeps_whole_journeys_deterministically() -> None:
    from microseg.report.data import sample_journeys

    tp = pd.DataFrame(
        {
            "journey_id": [f"j{i // 3}" for i in range(3000)],
            "ts": pd.Timestamp("2024-01-01"),
            "channel": "email",
            "converted": False,
        }
    )
    small = sample_journeys(tp, limit=100)
    assert small["journey_id"].nunique() == 100
    assert (small.groupby("journey_id").size() == 3).all()  # journeys are never cut
    assert small.equals(sample_journeys(tp, limit=100))
    assert sample_journeys(tp, limit=5000) is tp
