"""Campaign guard rules: definition files, judging KPIs, and audited automated actions."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import kpis_support as ks
import pytest

from microseg.config.project import Project
from microseg.config.yamlio import parse_text
from microseg.errors import DefinitionError, MicrosegError, NotFoundError
from microseg.measure.guards import (
    apply_guards,
    campaign_allows,
    campaign_share,
    campaign_status,
    check_campaigns,
    evaluate_guards,
    is_campaign_active,
    load_campaigns,
    require_campaign,
    set_campaign_status,
    validate_campaign_document,
)
from microseg.workspace import Workspace

AS_OF = datetime(2024, 2, 12, 8)  # last complete ISO week: 2024-02-05 .. 2024-02-11

CAMPAIGN = """\
name: vip_newsletter
segments: [vip]
guards:
  - name: conv_floor
    segment: vip
    metric: conversion_rate
    below: {floor}
    min_users: 20
    action: pause
  - name: all_conv_drop
    segment: "(all)"
    metric: conversion_rate
    drop: 0.5
    baseline_periods: 3
    action: {{reduce_share: 0.5}}
  - name: bounce_watch
    segment: vip
    metric: bounce_rate
    above: 0.99
    action: notify
"""


def _ws(drop_last_week: bool = False) -> Workspace:
    ws = Workspace.ephemeral()
    ks.build(ws)
    if drop_last_week:  # planted: nobody buys in the judged week
        ws.store.execute(
            "UPDATE events SET event_type = 'page_view', revenue = NULL"
            " WHERE event_type = 'purchase' AND ts >= TIMESTAMP '2024-02-05'"
        )
    return ws


def _spec(floor: float = 0.05) -> dict[str, object]:
    doc = parse_text(CAMPAIGN.format(floor=floor), "campaigns/vip_newsletter.yaml")
    spec = validate_campaign_document(doc)
    return {spec.name: spec}


def test_validator_reports_file_line_and_cause() -> None:
    bad = "name: c1\nguards:\n  - segment: vip\n    metric: conversion_rat\n    below: 0.1\n"
    with pytest.raises(DefinitionError) as err:
        validate_campaign_document(parse_text(bad, "campaigns/c1.yaml"))
    text = str(err.value)
    assert "campaigns/c1.yaml:4" in text and "did you mean 'conversion_rate'" in text
    both = "name: c2\nguards:\n  - {segment: vip, metric: bounce_rate, below: 0.1, drop: 0.2}\n"
    with pytest.raises(DefinitionError, match="exactly one condition"):
        validate_campaign_document(parse_text(both, "campaigns/c2.yaml"))
    share = "name: c3\nguards:\n  - {segment: vip, metric: bounce_rate, above: 1, action: {reduce_share: 2}}\n"
    with pytest.raises(DefinitionError, match=r"c3\.yaml:3"):
        validate_campaign_document(parse_text(share, "campaigns/c3.yaml"))
    typo = "name: c4\nguard: []\n"
    with pytest.raises(DefinitionError, match="did you mean 'guards'"):
        validate_campaign_document(parse_text(typo, "campaigns/c4.yaml"))
    dup = "guards:\n  - {name: g, segment: vip, metric: revenue, below: 1}\n"
    dup += "  - {name: g, segment: vip, metric: sessions, below: 1}\n"
    with pytest.raises(DefinitionError, match="guard name 'g' is used twice"):
        validate_campaign_document(parse_text(dup, "campaigns/c5.yaml"))
    stem = validate_campaign_document(parse_text("segments: []\n", "campaigns/spring_sale.yaml"))
    assert stem.name == "spring_sale"


def test_segment_references_checked_against_project(tmp_path: Path) -> None:
    project = Project.init(tmp_path / "proj", "p")
    (project.root / "segments" / "vip.yaml").write_text(
        "name: vip\nrule:\n  bucket: {salt: s, of: 100, range: [0, 10]}\n"
    )
    path = project.root / "campaigns" / "c.yaml"
    path.write_text(
        "name: c\nsegments: [vipp]\nguards:\n  - {segment: vip, metric: revenue, below: 1}\n"
    )
    with pytest.raises(DefinitionError) as err:
        load_campaigns(project.root, project)
    assert "c.yaml:2" in str(err.value) and "unknown segment 'vipp'" in str(err.value)
    assert "did you mean 'vip'" in str(err.value)


def test_absolute_threshold_pauses_and_is_audited_once() -> None:
    ws = _ws()
    specs = _spec(floor=1.0)  # conversion is always below 100 %
    outcomes = evaluate_guards(ws.store, specs, as_of=AS_OF)
    by = {o.rule: o for o in outcomes}
    floor = by["conv_floor"]
    assert floor.triggered and floor.period == datetime(2024, 2, 5)
    assert floor.users >= 20 and 0 < floor.value < 1
    assert not by["bounce_watch"].triggered
    assert not by["all_conv_drop"].triggered  # no planted drop here
    assert is_campaign_active(ws.store, "vip_newsletter")
    applied = apply_guards(ws.store, specs, outcomes, actor="tester")
    assert [(a.rule, a.result) for a in applied] == [("conv_floor", "paused")]
    assert not is_campaign_active(ws.store, "vip_newsletter")
    status = campaign_status(ws.store).iloc[0]
    assert status["status"] == "paused" and "conv_floor" in status["reason"]
    assert status["changed_by"] == "tester"
    audit = ws.store.rows("SELECT action, target, details FROM audit_log WHERE actor = 'tester'")
    assert [(a, t) for a, t, _ in audit] == [("campaign.pause", "vip_newsletter")]
    assert json.loads(audit[0][2])["rule"] == "conv_floor"
    again = apply_guards(ws.store, specs, evaluate_guards(ws.store, specs, as_of=AS_OF))
    assert [a.result for a in again] == ["already_applied"]
    set_campaign_status(ws.store, "vip_newsletter", "active", reason="reviewed", actor="ann")
    assert is_campaign_active(ws.store, "vip_newsletter")
    with pytest.raises(MicrosegError, match="status must be"):
        set_campaign_status(ws.store, "vip_newsletter", "stopped", reason="x", actor="ann")


def test_relative_drop_throttles_share_without_compounding() -> None:
    ws = _ws(drop_last_week=True)
    specs = _spec(floor=0.0)
    outcomes = {o.rule: o for o in evaluate_guards(ws.store, specs, as_of=AS_OF)}
    drop = outcomes["all_conv_drop"]
    assert drop.triggered and drop.value == 0.0 and drop.baseline > 0.1
    assert "-100.0% vs baseline" in drop.note
    assert not outcomes["conv_floor"].triggered  # 0 is not below a floor of 0
    applied = apply_guards(ws.store, specs, outcomes.values())
    assert [a.result for a in applied] == ["share 1 -> 0.5"]
    assert campaign_share(ws.store, "vip_newsletter") == 0.5
    assert is_campaign_active(ws.store, "vip_newsletter")
    apply_guards(ws.store, specs, outcomes.values())
    assert campaign_share(ws.store, "vip_newsletter") == 0.5  # once per judged period


def test_min_users_and_missing_data_never_trigger() -> None:
    ws = _ws()
    text = CAMPAIGN.format(floor=1.0).replace("min_users: 20", "min_users: 100000")
    spec = validate_campaign_document(parse_text(text, "campaigns/x.yaml"))
    outcomes = {o.rule: o for o in evaluate_guards(ws.store, [spec], as_of=AS_OF)}
    assert not outcomes["conv_floor"].triggered
    assert "< min 100000" in outcomes["conv_floor"].note
    # a judged window before any data: the baseline is not usable
    early = {o.rule: o for o in evaluate_guards(ws.store, [spec], as_of=datetime(2024, 1, 9))}
    assert not early["all_conv_drop"].triggered and "baseline has" in early["all_conv_drop"].note
    nodata = validate_campaign_document(
        parse_text("name: n\nguards:\n  - {segment: ghost, metric: revenue, below: 5}\n", "n.yaml")
    )
    (o,) = evaluate_guards(ws.store, [nodata], as_of=AS_OF)
    assert not o.triggered and "no data" in o.note and math.isnan(o.value)


def test_notify_and_check_campaigns_from_project(tmp_path: Path) -> None:
    ws = _ws()
    (tmp_path / "campaigns").mkdir()
    (tmp_path / "campaigns" / "watch.yaml").write_text(
        "guards:\n  - {segment: vip, metric: bounce_rate, above: 0.01, action: notify,"
        " min_users: 1}\n"
    )
    outcomes, applied = check_campaigns(ws.store, tmp_path, as_of=AS_OF)
    assert outcomes[0].triggered and applied == []  # dry run changes nothing
    assert ws.store.scalar("SELECT count(*) FROM audit_log") == 0
    _, applied = check_campaigns(ws.store, tmp_path, as_of=AS_OF, apply=True)
    assert [a.result for a in applied] == ["notified"]
    assert ws.store.scalar("SELECT count(*) FROM audit_log WHERE action = 'campaign.notify'") == 1
    assert is_campaign_active(ws.store, "watch")
    require_campaign(ws.store, tmp_path, "watch")
    with pytest.raises(NotFoundError, match="did you mean 'watch'"):
        require_campaign(ws.store, tmp_path, "wach")


def test_activation_check_honours_pause_and_share() -> None:
    ws = Workspace.ephemeral()
    people = [f"p{i}" for i in range(1000)]
    assert all(campaign_allows(ws.store, "c", p) == (True, "active") for p in people[:10])
    set_campaign_status(ws.store, "c", "active", reason="throttle", actor="t", share=0.25)
    verdicts = {p: campaign_allows(ws.store, "c", p) for p in people}
    allowed = [p for p, (ok, _) in verdicts.items() if ok]
    assert 0.20 < len(allowed) / len(people) < 0.30  # ~3.6 sigma around 0.25
    assert {why for ok, why in verdicts.values() if not ok} == {"campaign_throttled"}
    assert all(campaign_allows(ws.store, "c", p)[0] for p in allowed[:50])  # stable buckets
    set_campaign_status(ws.store, "c", "paused", reason="stop", actor="t")
    assert campaign_allows(ws.store, "c", allowed[0]) == (False, "campaign_paused")
    assert campaign_share(ws.store, "c") == 0.25  # pausing keeps the share
