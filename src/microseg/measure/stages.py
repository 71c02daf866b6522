"""Journey stage mapping: place each segment on awareness → consideration → conversion →
retention by declarative rules over its KPIs.

Rules are evaluated in order; a segment takes the stage of the first rule whose conditions
all hold, else ``default``. Rules can come from configuration as plain text, e.g.::

    {"retention": ["repeat_rate >= 0.3"],
     "conversion": ["conversion_rate >= 0.05"],
     "consideration": ["visit_rate >= 0.2", "sessions_per_user >= 1.5"]}
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from microseg.errors import DefinitionError, MicrosegError, did_you_mean

STAGES = ("awareness", "consideration", "conversion", "retention")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
_COND = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|==|!=|>|<)\s*(-?[0-9.]+(?:[eE]-?[0-9]+)?)\s*$"
)


@dataclass(frozen=True)
class Condition:
    """``kpi op value``, e.g. ``conversion_rate >= 0.05``."""

    kpi: str
    op: str
    value: float

    def holds(self, kpis: Mapping[str, float]) -> bool:
        x = kpis.get(self.kpi)
        return x is not None and x == x and _OPS[self.op](float(x), self.value)

    def __str__(self) -> str:
        return f"{self.kpi} {self.op} {self.value:g}"


@dataclass(frozen=True)
class StageRule:
    """A stage and the conditions (all required) that place a segment in it."""

    stage: str
    conditions: tuple[Condition, ...]


def parse_condition(text: str) -> Condition:
    """Parse ``"kpi >= 0.3"``; raises DefinitionError on malformed text."""
    m = _COND.match(text)
    if not m:
        raise DefinitionError(
            f"cannot parse stage condition {text!r}; expected e.g. 'repeat_rate >= 0.3'"
        )
    return Condition(m.group(1), m.group(2), float(m.group(3)))


def parse_rules(spec: Mapping[str, Sequence[str]]) -> tuple[StageRule, ...]:
    """Rules from ``{stage: [condition, ...]}`` in the mapping's order."""
    rules = []
    for stage, conds in spec.items():
        if stage not in STAGES:
            raise DefinitionError(f"unknown journey stage {stage!r}{did_you_mean(stage, STAGES)}")
        rules.append(StageRule(stage, tuple(parse_condition(c) for c in conds)))
    return tuple(rules)


DEFAULT_RULES = parse_rules(
    {
        "retention": ["repeat_rate >= 0.3"],
        "conversion": ["conversion_rate >= 0.05"],
        "consideration": ["visit_rate >= 0.2"],
    }
)


def map_stages(
    kpis: pd.DataFrame,
    rules: Sequence[StageRule] = DEFAULT_RULES,
    *,
    segment_col: str = "segment",
    default: str = "awareness",
) -> pd.DataFrame:
    """``segment, stage, rule`` for each row of a per-segment KPI table.

    Every KPI named by a rule must be a column of ``kpis`` (a typo is an error, not a silent
    miss); a NaN KPI makes its condition false.
    """
    if segment_col not in kpis.columns:
        raise MicrosegError(f"KPI table lacks {segment_col!r}; has {list(kpis.columns)}")
    for rule in rules:
        for c in rule.conditions:
            if c.kpi not in kpis.columns:
                raise MicrosegError(
                    f"stage rule for {rule.stage!r} uses unknown KPI {c.kpi!r}"
                    f"{did_you_mean(c.kpi, map(str, kpis.columns))}"
                )
    out = []
    for row in kpis.to_dict("records"):
        stage, why = default, "default"
        for rule in rules:
            if all(c.holds(row) for c in rule.conditions):
                stage, why = rule.stage, " and ".join(map(str, rule.conditions))
                break
        out.append({segment_col: row[segment_col], "stage": stage, "rule": why})
    result = pd.DataFrame(out)
    result["stage"] = pd.Categorical(result["stage"], categories=list(STAGES), ordered=True)
    return result


def stage_funnel(stages: pd.DataFrame, sizes: pd.Series | None = None) -> pd.DataFrame:
    """Segments (and users, if ``sizes`` indexed by segment is given) per stage, in order."""
    counts = stages.groupby("stage", observed=False).size().rename("segments").to_frame()
    if sizes is not None:
        seg_col = stages.columns[0]
        users = stages.assign(users=stages[seg_col].map(sizes).fillna(0))
        counts["users"] = users.groupby("stage", observed=False)["users"].sum()
    return counts.reset_index()
