# ruff: noqa: F811 - pytest fixtures imported from traits_fixtures are redefined as arguments
"""traits.yaml validation (file:line + did-you-mean) and golden SQL of compiled traits."""

from __future__ import annotations

from datetime import datetime
from importlib import resources

import pytest
import yaml
from traits_fixtures import settings, traits_from  # noqa: F401 - pytest fixtures

from microseg.config.models import ProjectSettings
from microseg.errors import DefinitionError
from microseg.traits import compile_traits, load_traits, parse_expression

AS_OF = datetime(2024, 3, 1)


def problems(traits_from, text: str) -> list[str]:
    with pytest.raises(DefinitionError) as info:
        traits_from(text)
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        (
            "traits:\n  - {name: a, kind: count, events: [purchse]}\n",
            2,
            "unknown event type 'purchse' (did you mean 'purchase'?)",
        ),
        (
            "traits:\n  - name: a\n    kind: sum\n    property: prise\n",
            4,
            "unknown property 'prise' (did you mean 'price'?)",
        ),
        (
            "traits:\n  - {name: a, kind: cuont}\n",
            2,
            "unknown kind 'cuont' (did you mean 'count'?)",
        ),
        (
            "traits:\n  - name: a\n    kind: count\n    windw: {last: 3d}\n",
            4,
            "unknown field 'windw' (did you mean 'window'?)",
        ),
        (
            "traits:\n  - name: a\n    kind: count\n    window: {last: 3 days}\n",
            4,
            "duration '3 days' must look like 30d",
        ),
        (
            "traits:\n  - name: a\n    kind: sum\n    expression: abs(price)\n",
            4,
            "may only use numeric properties, numbers and + - * /",
        ),
        (
            "traits:\n  - name: a\n    kind: sum\n    expression: price * categry\n",
            4,
            "'categry', which is not a declared numeric property",
        ),
        (
            "traits:\n  - name: a\n    kind: sum\n    expression: price; DROP TABLE events\n",
            4,
            "expression",
        ),
        (
            "traits:\n  - name: a\n    kind: avg\n    expression: \"price || 'x'\"\n",
            4,
            "may only use numeric properties",
        ),
        (
            "traits:\n  - name: a\n    kind: count\n    where: {category: {gt: 3}}\n",
            4,
            "'category' is string; gt need a numeric property",
        ),
        (
            "traits:\n  - name: a\n    kind: last\n    property: campaign_id\n    events: [purchase]\n",
            4,
            "property 'campaign_id' is not declared on purchase",
        ),
        (
            "traits:\n  - {name: a, kind: count}\n  - {name: a, kind: count}\n",
            3,
            "duplicate trait column 'a'",
        ),
        (
            "traits:\n  - name: x\n    kind: engagement\n    weights: {purchase: 1, clik: 2}\n",
            4,
            "unknown event type 'clik'",
        ),
        ("traits:\n  - name: Bad-Name\n    kind: count\n", 2, "must be lower_snake_case"),
    ],
)
def test_bad_definitions_are_refused_with_line(traits_from, text, line, expected):
    found = problems(traits_from, text)
    assert any(expected in p and f"<traits>:{line}:" in p for p in found), found


def test_all_problems_reported_at_once(traits_from):
    found = problems(
        traits_from,
        (
            "traits:\n"
            "  - {name: a, kind: count, events: [purchse]}\n"
            "  - {name: b, kind: dominant, property: devise}\n"
        ),
    )
    assert len(found) == 2
    assert "did you mean 'device'" in found[1] and ":3:" in found[1]


def test_template_traits_file_is_valid():
    templates = resources.files("microseg.config") / "templates"
    settings = ProjectSettings.model_validate(
        yaml.safe_load((templates / "microseg.yaml").read_text())
    )
    traitset = load_traits((templates / "traits.yaml").read_text(), settings.taxonomy)
    kinds = {t.kind for t in traitset}
    assert {"rfm", "engagement", "interest_tags", "dominant", "preferred_hour", "top"} <= kinds
    compile_traits(traitset, AS_OF).sql(dialect="duckdb")


def test_expression_tree_is_quoted_and_safe(settings):
    numeric = {"price": "number", "quantity": "integer"}
    tree = parse_expression("quantity * (price - 1.5) / 2", numeric)
    assert tree.sql(dialect="duckdb") == '"quantity" * ("price" - 1.5) / 2'
    for bad in ("price + 'a'", "events.price", "price > 1", "(SELECT 1)", "price * price2"):
        with pytest.raises(ValueError):
            parse_expression(bad, numeric)


def _sql(traits_from, text: str, dialect: str = "duckdb") -> str:
    return compile_traits(traits_from(text), AS_OF).sql(dialect=dialect)


def test_golden_count_in_window(traits_from):
    sql = _sql(
        traits_from,
        (
            "traits:\n  - {name: views_7d, kind: count, events: [product_view],"
            ' where: {category: [running shoes, "it\'s"]}, window: {last: 7d}}\n'
        ),
    )
    assert sql == (
        'WITH "_agg" AS (SELECT "profile_id", COUNT(*) FILTER(WHERE "event_type" IN '
        "('product_view') AND \"category\" IN ('running shoes', 'it''s') AND \"ts\" > "
        'CAST(\'2024-02-23 00:00:00\' AS TIMESTAMP)) AS "_a1" FROM (SELECT "i"."profile_id", '
        '"e"."category", "e"."event_type", "e"."ts" FROM "events" AS "e" JOIN "identities" AS "i" '
        'ON "i"."id_key" = "e"."id_key" WHERE "e"."ts" <= CAST(\'2024-03-01 00:00:00\' AS TIMESTAMP) '
        'AND "e"."ts" >= CAST(\'2024-02-23 00:00:00\' AS TIMESTAMP)) AS "_pe" GROUP BY "profile_id"), '
        '"_scored" AS (SELECT "_agg"."profile_id", "_agg"."_a1" FROM "_agg") '
        'SELECT "_p"."profile_id", CAST(COALESCE("_scored"."_a1", 0) AS BIGINT) AS "views_7d" '
        'FROM "profiles" AS "_p" LEFT JOIN "_scored" ON "_scored"."profile_id" = "_p"."profile_id" '
        'WHERE "_p"."merged_into" IS NULL'
    )


def test_golden_sum_expression_and_recency(traits_from):
    sql = _sql(
        traits_from,
        (
            "traits:\n"
            "  - {name: spend, kind: sum, expression: quantity * price, events: [purchase]}\n"
            "  - {name: days_since, kind: recency_days, events: [purchase]}\n"
        ),
    )
    assert (
        'SUM(CAST("quantity" * "price" AS DOUBLE)) FILTER(WHERE "event_type" IN (\'purchase\')'
        ' AND NOT "quantity" * "price" IS NULL) AS "_a1"'
    ) in sql
    assert 'MAX("ts") FILTER(WHERE "event_type" IN (\'purchase\')) AS "_a2"' in sql
    assert (
        'CAST(FLOOR((1709251200.0 - EPOCH("_scored"."_a2")) / 86400) AS BIGINT) AS "days_since"'
        in sql
    )


def test_golden_dominant_two_level(traits_from):
    sql = _sql(traits_from, "traits:\n  - {name: device, kind: dominant, property: device}\n")
    assert (
        '"_val1" AS (SELECT "profile_id", ARG_MIN("_v", {\'k\': -"_c2", \'v\': "_v"}) '
        'FILTER(WHERE "_c2" > 0) AS "_a3" FROM (SELECT "profile_id", "device" AS "_v", '
        'COUNT(*) AS "_c2" FROM'
    ) in sql
    assert (
        'WHERE NOT "device" IS NULL GROUP BY "profile_id", "_v") AS g GROUP BY "profile_id")' in sql
    )


def test_spark_rendering_uses_portable_functions(traits_from):
    sql = _sql(
        traits_from,
        (
            "traits:\n"
            "  - {name: last_cat, kind: last, property: category}\n"
            "  - {name: days_since, kind: recency_days}\n"
            "  - {name: rx, kind: count, where: {category: {matches: '^run'}}}\n"
        ),
        dialect="spark",
    )
    assert "MAX_BY(" in sql and "UNIX_TIMESTAMP(" in sql and " RLIKE " in sql


def test_validate_traits_file_hook(tmp_path):
    from microseg.config.project import Project
    from microseg.config.yamlio import load_document
    from microseg.traits import validate_traits_file

    project = Project.init(tmp_path / "p", "p")
    traitset = validate_traits_file(load_document(project.root / "traits.yaml"), project)
    assert len(traitset) >= 10
    (project.root / "traits.yaml").write_text(
        "traits:\n  - {name: a, kind: top, property: categroy}\n"
    )
    with pytest.raises(DefinitionError) as info:
        validate_traits_file(load_document(project.root / "traits.yaml"), project)
    assert "did you mean 'category'" in str(info.value) and "traits.yaml:2" in str(info.value)
