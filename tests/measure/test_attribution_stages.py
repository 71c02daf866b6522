"""Journey stage mapping of segments by declarative KPI rules."""

from __future__ import annotations

import pandas as pd
import pytest

from microseg.errors import DefinitionError, MicrosegError
from microseg.measure.stages import map_stages, parse_condition, parse_rules, stage_funnel

KPIS = pd.DataFrame(
    {
        "segment": ["loyal_vips", "cart_abandoners", "browsers", "cold_leads", "unknown_kpis"],
        "repeat_rate": [0.6, 0.05, 0.0, 0.0, float("nan")],
        "conversion_rate": [0.2, 0.08, 0.01, 0.0, float("nan")],
        "visit_rate": [0.9, 0.7, 0.4, 0.05, float("nan")],
    }
)


def test_default_rules_place_each_segment() -> None:
    out = map_stages(KPIS).set_index("segment")
    assert out["stage"].to_dict() == {
        "loyal_vips": "retention",
        "cart_abandoners": "conversion",
        "browsers": "consideration",
        "cold_leads": "awareness",
        "unknown_kpis": "awareness",
    }
    assert out.loc["browsers", "rule"] == "visit_rate >= 0.2"


def test_custom_rules_with_multiple_conditions_and_funnel() -> None:
    rules = parse_rules(
        {
            "conversion": ["conversion_rate > 0.05", "visit_rate >= 0.8"],
            "consideration": ["visit_rate >= 0.3"],
        }
    )
    out = map_stages(KPIS, rules)
    assert list(out["stage"]) == [
        "conversion",
        "consideration",
        "consideration",
        "awareness",
        "awareness",
    ]
    funnel = stage_funnel(
        out, pd.Series({"loyal_vips": 100, "cart_abandoners": 400, "browsers": 900})
    )
    assert list(funnel["stage"]) == ["awareness", "consideration", "conversion", "retention"]
    assert funnel.set_index("stage").loc["consideration", "users"] == 1300


def test_rule_errors() -> None:
    with pytest.raises(DefinitionError, match="cannot parse"):
        parse_condition("repeat_rate => 3")
    with pytest.raises(DefinitionError, match="did you mean 'retention'"):
        parse_rules({"retension": ["repeat_rate >= 0.3"]})
    with pytest.raises(MicrosegError, match="did you mean 'repeat_rate'"):
        map_stages(KPIS, parse_rules({"retention": ["repeat_rat >= 0.3"]}))
    assert parse_condition("x < -1.5e-2").value == pytest.approx(-0.015)
