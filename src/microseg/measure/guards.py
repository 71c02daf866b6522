"""Campaign guard rules (A4): pause, throttle or flag a campaign when a segment KPI falls.

A campaign is declared in ``campaigns/<name>.yaml``::

    name: vip_newsletter
    description: weekly newsletter to VIPs
    segments: [vip]
    guards:
      - name: conversion_floor
        segment: vip
        metric: conversion_rate      # any name of microseg.measure.kpis.METRICS
        period: W                    # D, W, M or Q: the last *complete* period is judged
        below: 0.02                  # absolute threshold ...
        min_users: 50                # ... only when the value rests on >= 50 users
        action: pause
      - segment: vip
        metric: email_click_rate
        drop: 0.3                    # ... or a relative drop vs the mean of the
        baseline_periods: 4          #     previous N periods (here: 30 % below it)
        action: {reduce_share: 0.5}  # multiply the campaign's traffic share
      - segment: vip
        metric: bounce_rate
        above: 0.8                   # for "bad when high" metrics
        action: notify

State lives in the ``campaigns`` table (migration 11): status ``active``/``paused``, share,
reason, when and by whom. :func:`is_campaign_active` / :func:`campaign_share` are what the
activation path checks. Each rule fires at most once per judged period (table
``campaign_actions``), so re-running ``check --apply`` never compounds a throttle; every
automated action is written to the audit log.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from microseg.config.models import check_name
from microseg.config.yamlio import Document, load_document, validate_model
from microseg.errors import DefinitionError, MicrosegError, NotFoundError, Problem, did_you_mean
from microseg.measure.kpis import ALL, FREQS, METRICS, segment_kpis
from microseg.store.duckdb_store import Store, utcnow

CAMPAIGN_GLOB = "campaigns/*.yaml"
STATUSES = ("active", "paused")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReduceShare(_Strict):
    """Throttle: multiply the campaign's traffic share by ``reduce_share`` (0 < f < 1)."""

    reduce_share: float = Field(gt=0, lt=1)


Action = Literal["pause", "notify"] | ReduceShare


class GuardRule(_Strict):
    """One rule: judge ``metric`` of ``segment`` over the last complete ``period``."""

    name: str | None = None
    segment: str
    metric: str
    period: str = "W"
    below: float | None = None
    above: float | None = None
    drop: float | None = Field(default=None, gt=0, lt=1)
    baseline_periods: int = Field(default=4, ge=1, le=52)
    min_users: int = Field(default=30, ge=0)
    action: Action = "pause"

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"unknown KPI '{value}'{did_you_mean(value, list(METRICS))}")
        return value

    @field_validator("period")
    @classmethod
    def _known_period(cls, value: str) -> str:
        if value.upper() not in FREQS:
            raise ValueError(f"period must be one of {', '.join(FREQS)} (got '{value}')")
        return value.upper()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value, "guard name")

    @model_validator(mode="after")
    def _one_condition(self) -> GuardRule:
        given = [k for k in ("below", "above", "drop") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "a guard needs exactly one condition: 'below', 'above' or 'drop'"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    def label(self, index: int) -> str:
        return self.name or f"{self.segment}.{self.metric}.{index}"

    def describe(self) -> str:
        if self.below is not None:
            cond = f"< {self.below:g}"
        elif self.above is not None:
            cond = f"> {self.above:g}"
        else:
            cond = f"drops {self.drop:.0%} vs previous {self.baseline_periods} periods"
        return f"{self.metric} of {self.segment} per {self.period} {cond}"


class CampaignSpec(_Strict):
    """A campaign file: name, audience segments and guard rules."""

    name: str
    description: str | None = None
    segments: list[str] = Field(default_factory=list)
    share: float = Field(default=1.0, gt=0, le=1)
    guards: list[GuardRule] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value, "campaign name")

    @model_validator(mode="after")
    def _unique_guards(self) -> CampaignSpec:
        labels = [g.label(i) for i, g in enumerate(self.guards)]
        twice = sorted({x for x in labels if labels.count(x) > 1})
        if twice:
            raise ValueError(f"guard name '{twice[0]}' is used twice; guard names must be unique")
        return self


# --------------------------------------------------------------------------- definitions
def validate_campaign_document(doc: Document, project: Any = None) -> CampaignSpec:
    """Validate one parsed ``campaigns/*.yaml`` (the project validator hook).

    Shape and types via pydantic (file:line:column, "did you mean"); the name defaults to the
    file stem; segment references are checked against the project's segment files.
    """
    if not isinstance(doc.data, dict):
        raise DefinitionError(doc.problem("a campaign file must be a mapping with 'name:'"))
    if "name" not in doc.data:
        stem = Path(doc.file).stem
        doc = Document({"name": stem, **doc.data}, doc.file, doc.positions)
    spec = validate_model(CampaignSpec, doc)
    known = _project_segments(project)
    if known is not None:
        problems: list[Problem] = []
        refs: list[tuple[str, tuple[str | int, ...]]] = [
            (s, ("segments", i)) for i, s in enumerate(spec.segments)
        ]
        refs += [(g.segment, ("guards", i, "segment")) for i, g in enumerate(spec.guards)]
        for name, loc in refs:
            if name != ALL and name not in known:
                problems.append(
                    doc.problem(f"unknown segment '{name}'{did_you_mean(name, sorted(known))}", loc)
                )
        if problems:
            raise DefinitionError(problems)
    return spec


def _project_segments(project: Any) -> set[str] | None:
    root = getattr(project, "root", None)
    if root is None:
        return None
    from microseg.segments.parse import load_segment, project_segment_files

    names: set[str] = set()
    for path in project_segment_files(root):
        try:
            names.add(load_segment(path).name)
        except DefinitionError:
            continue  # reported when that file is validated
    return names


def load_campaigns(root: str | Path, project: Any = None) -> dict[str, CampaignSpec]:
    """Every ``campaigns/*.yaml`` of a project; one DefinitionError lists all problems."""
    out: dict[str, CampaignSpec] = {}
    problems: list[Problem] = []
    for path in sorted(Path(root).glob(CAMPAIGN_GLOB)):
        try:
            doc = load_document(path)
            spec = validate_campaign_document(doc, project)
        except DefinitionError as exc:
            problems.extend(exc.problems)
            continue
        if spec.name in out:
            problems.append(doc.problem(f"campaign '{spec.name}' is defined twice", ("name",)))
        out[spec.name] = spec
    if problems:
        raise DefinitionError(problems)
    return out


# --------------------------------------------------------------------------- state
def campaign_status(store: Store) -> pd.DataFrame:
    """Every campaign with recorded state: ``campaign, status, share, reason, changed_at,
    changed_by``."""
    return store.df(
        "SELECT campaign, status, share, reason, changed_at, changed_by FROM campaigns"
        " ORDER BY campaign"
    )


def is_campaign_active(store: Store, name: str) -> bool:
    """False only when the campaign has been paused (unknown campaigns are active)."""
    status = store.scalar("SELECT status FROM campaigns WHERE campaign = ?", [name])
    return status != "paused"


def campaign_share(store: Store, name: str) -> float:
    """The traffic share the activation path should give the campaign (1.0 when unset)."""
    share = store.scalar("SELECT share FROM campaigns WHERE campaign = ?", [name])
    return 1.0 if share is None else float(share)


def campaign_allows(store: Store, name: str, profile_id: str) -> tuple[bool, str]:
    """The activation path's check for one recipient: ``(allowed, reason)``.

    Refused when the campaign is paused, or when the recipient falls outside the campaign's
    traffic share (a stable hash bucket of campaign and profile, so a throttled campaign
    keeps reaching the same people rather than a random subset each run)."""
    row = store.rows("SELECT status, share FROM campaigns WHERE campaign = ?", [name])
    if not row:
        return True, "active"
    status, share = row[0][0], float(row[0][1])
    if status == "paused":
        return False, "campaign_paused"
    if share < 1.0 and _bucket(name, profile_id) >= share:
        return False, "campaign_throttled"
    return True, "active"


def _bucket(name: str, profile_id: str) -> float:
    digest = hashlib.sha256(f"{name}\x1f{profile_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def set_campaign_status(
    store: Store,
    name: str,
    status: str,
    *,
    reason: str,
    actor: str,
    share: float | None = None,
) -> None:
    """Set a campaign's status (and optionally its share), audited."""
    if status not in STATUSES:
        raise MicrosegError(f"status must be one of {', '.join(STATUSES)} (got {status!r})")
    if share is not None and not 0 < share <= 1:
        raise MicrosegError(f"share must be in (0, 1] (got {share})")
    with store.transaction():
        current = store.rows("SELECT share FROM campaigns WHERE campaign = ?", [name])
        new_share = share if share is not None else (current[0][0] if current else 1.0)
        store.execute("DELETE FROM campaigns WHERE campaign = ?", [name])
        store.execute(
            "INSERT INTO campaigns (campaign, status, share, reason, changed_at, changed_by)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [name, status, new_share, reason, utcnow(), actor],
        )
        store.audit(actor, f"campaign.{status}", name, {"reason": reason, "share": new_share})


# --------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class GuardOutcome:
    """The judgement of one rule for one campaign."""

    campaign: str
    rule: str
    description: str
    period: datetime | None
    value: float
    baseline: float
    users: int
    triggered: bool
    action: str
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def evaluate_guards(
    store: Store,
    campaigns: Mapping[str, CampaignSpec] | Iterable[CampaignSpec],
    *,
    as_of: datetime | None = None,
) -> list[GuardOutcome]:
    """Judge every guard of every campaign on the last complete period before ``as_of``."""
    specs = list(campaigns.values()) if isinstance(campaigns, Mapping) else list(campaigns)
    as_of = as_of or utcnow()
    frames: dict[str, pd.DataFrame] = {}
    outcomes: list[GuardOutcome] = []
    for spec in specs:
        for i, rule in enumerate(spec.guards):
            frame = frames.get(rule.period)
            if frame is None:
                frame = _kpis_for(store, specs, rule.period, as_of)
                frames[rule.period] = frame
            outcomes.append(_judge(spec, i, rule, frame))
    return outcomes


def _kpis_for(
    store: Store, specs: Sequence[CampaignSpec], period: str, as_of: datetime
) -> pd.DataFrame:
    rules = [g for s in specs for g in s.guards if g.period == period]
    part = FREQS[period][1]
    current = pd.Timestamp(as_of).to_period(part).start_time  # judged periods end here
    depth = max(g.baseline_periods if g.drop is not None else 0 for g in rules) + 1
    start = (pd.Timestamp(as_of).to_period(part) - depth).start_time
    wanted = sorted({g.segment for g in rules})
    known = {
        str(r[0])
        for r in store.rows(
            "SELECT name FROM segments UNION SELECT segment FROM membership_history"
            " UNION SELECT segment FROM memberships"
        )
    }
    present = [s for s in wanted if s == ALL or s in known]
    if not present:
        return pd.DataFrame(columns=["segment", "period", "metric", "value", "users"])
    return segment_kpis(
        store,
        segments=present,
        start=start.to_pydatetime(),
        end=current.to_pydatetime(),
        freq=period,
        as_of=as_of,
    )


def _judge(spec: CampaignSpec, index: int, rule: GuardRule, frame: pd.DataFrame) -> GuardOutcome:
    label = rule.label(index)
    action = _action_name(rule.action)
    sub = frame[(frame["segment"] == rule.segment) & (frame["metric"] == rule.metric)]
    sub = sub.sort_values("period")

    def outcome(
        period: Any, value: float, baseline: float, users: int, hit: bool, note: str
    ) -> GuardOutcome:
        when = None if period is None else pd.Timestamp(period).to_pydatetime()
        return GuardOutcome(
            spec.name, label, rule.describe(), when, value, baseline, users, hit, action, note
        )

    nan = float("nan")
    if sub.empty:
        return outcome(None, nan, nan, 0, False, f"no data for segment '{rule.segment}'")
    last = sub.iloc[-1]
    value, users = float(last["value"]), int(last["users"])
    if users < rule.min_users:
        return outcome(
            last["period"], value, nan, users, False, f"only {users} users < min {rule.min_users}"
        )
    if math.isnan(value):
        return outcome(last["period"], value, nan, users, False, "metric not available")
    if rule.below is not None:
        hit = value < rule.below
        return outcome(last["period"], value, rule.below, users, hit, _cmp(hit, "below"))
    if rule.above is not None:
        hit = value > rule.above
        return outcome(last["period"], value, rule.above, users, hit, _cmp(hit, "above"))
    prev = sub.iloc[:-1].tail(rule.baseline_periods)
    prev = prev[(prev["users"] >= rule.min_users) & prev["value"].notna()]
    if len(prev) < rule.baseline_periods:
        return outcome(
            last["period"],
            value,
            nan,
            users,
            False,
            f"baseline has {len(prev)} of {rule.baseline_periods} usable periods",
        )
    baseline = float(prev["value"].mean())
    assert rule.drop is not None
    hit = baseline > 0 and value < (1 - rule.drop) * baseline
    change = (value / baseline - 1) if baseline > 0 else nan
    note = f"{change:+.1%} vs baseline" if not math.isnan(change) else "baseline is 0"
    return outcome(last["period"], value, baseline, users, hit, note)


def _cmp(hit: bool, side: str) -> str:
    return f"{side} threshold" if hit else "within threshold"


def _action_name(action: Action) -> str:
    if isinstance(action, ReduceShare):
        return f"reduce_share x{action.reduce_share:g}"
    return action


# --------------------------------------------------------------------------- applying
@dataclass(frozen=True)
class AppliedAction:
    """What applying one triggered outcome did."""

    campaign: str
    rule: str
    action: str
    result: str  # applied | already_applied | already_paused


def apply_guards(
    store: Store,
    campaigns: Mapping[str, CampaignSpec],
    outcomes: Iterable[GuardOutcome],
    *,
    actor: str = "guards",
) -> list[AppliedAction]:
    """Carry out the actions of triggered outcomes, once per rule and judged period; audited."""
    done: list[AppliedAction] = []
    for o in outcomes:
        if not o.triggered or o.period is None:
            continue
        spec = campaigns[o.campaign]
        rule = next(g for i, g in enumerate(spec.guards) if g.label(i) == o.rule)
        with store.transaction():
            seen = store.scalar(
                "SELECT count(*) FROM campaign_actions WHERE campaign = ? AND rule = ?"
                " AND period = ?",
                [o.campaign, o.rule, o.period],
            )
            if seen:
                done.append(AppliedAction(o.campaign, o.rule, o.action, "already_applied"))
                continue
            result = _do(store, spec, rule, o, actor)
            store.execute(
                "INSERT INTO campaign_actions (campaign, rule, period, action, result, details,"
                " applied_at, applied_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    o.campaign,
                    o.rule,
                    o.period,
                    o.action,
                    result,
                    json.dumps(_details(o), default=str),
                    utcnow(),
                    actor,
                ],
            )
        done.append(AppliedAction(o.campaign, o.rule, o.action, result))
    return done


def _details(o: GuardOutcome) -> dict[str, Any]:
    return {
        "rule": o.rule,
        "condition": o.description,
        "period": o.period,
        "value": None if math.isnan(o.value) else o.value,
        "baseline": None if math.isnan(o.baseline) else o.baseline,
        "users": o.users,
        "note": o.note,
    }


def _do(store: Store, spec: CampaignSpec, rule: GuardRule, o: GuardOutcome, actor: str) -> str:
    reason = f"guard {o.rule}: {o.description} (value {o.value:.4g}, {o.note})"
    row = store.rows("SELECT status, share FROM campaigns WHERE campaign = ?", [spec.name])
    status, share = (row[0][0], float(row[0][1])) if row else ("active", spec.share)
    if rule.action == "notify":
        store.audit(actor, "campaign.notify", spec.name, _details(o))
        return "notified"
    if rule.action == "pause":
        if status == "paused":
            store.audit(actor, "campaign.guard_triggered", spec.name, _details(o))
            return "already_paused"
        _write_state(store, spec.name, "paused", share, reason, actor)
        store.audit(actor, "campaign.pause", spec.name, _details(o))
        return "paused"
    assert isinstance(rule.action, ReduceShare)
    new_share = share * rule.action.reduce_share
    _write_state(store, spec.name, status, new_share, reason, actor)
    store.audit(actor, "campaign.reduce_share", spec.name, {**_details(o), "share": new_share})
    return f"share {share:g} -> {new_share:g}"


def _write_state(
    store: Store, name: str, status: str, share: float, reason: str, actor: str
) -> None:
    store.execute("DELETE FROM campaigns WHERE campaign = ?", [name])
    store.execute(
        "INSERT INTO campaigns (campaign, status, share, reason, changed_at, changed_by)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [name, status, share, reason, utcnow(), actor],
    )


def check_campaigns(
    store: Store,
    root: str | Path,
    *,
    project: Any = None,
    as_of: datetime | None = None,
    apply: bool = False,
    actor: str = "guards",
) -> tuple[list[GuardOutcome], list[AppliedAction]]:
    """Load the project's campaigns, judge their guards and (with ``apply``) act on them."""
    specs = load_campaigns(root, project)
    outcomes = evaluate_guards(store, specs, as_of=as_of)
    applied = apply_guards(store, specs, outcomes, actor=actor) if apply else []
    return outcomes, applied


def require_campaign(store: Store, root: str | Path, name: str) -> None:
    """Raise NotFoundError unless ``name`` is a declared or recorded campaign."""
    declared = {p.stem for p in Path(root).glob(CAMPAIGN_GLOB)}
    recorded = {str(r[0]) for r in store.rows("SELECT campaign FROM campaigns")}
    with contextlib.suppress(DefinitionError):  # a broken file still counts by its stem
        declared |= set(load_campaigns(root))
    if name not in declared | recorded:
        known = sorted(declared | recorded)
        raise NotFoundError(f"no campaign {name!r}{did_you_mean(name, known)}")
