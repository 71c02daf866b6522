"""``sql.cached``: a statement tree is built and rendered once per builder and arguments."""

from __future__ import annotations

import duckdb
from sqlglot import exp

from microseg.store import sql as q

BUILDS: list[tuple[str, bool]] = []


def _count_rows(table: str, only_valid: bool) -> exp.Expr:
    BUILDS.append((table, only_valid))
    select = exp.select(exp.Count(this=exp.Star())).from_(q.table(table))
    if only_valid:
        select = select.where(exp.Is(this=q.col("_reason"), expression=exp.Null()))
    return select


def _tagged(table: str) -> exp.Expr:
    return exp.select(exp.Placeholder(this="tag"), q.col("x")).from_(q.table(table))


def test_the_same_arguments_reuse_the_text_and_other_arguments_build_anew() -> None:
    BUILDS.clear()
    first = q.cached(_count_rows, "t_cached_a", True)
    assert q.cached(_count_rows, "t_cached_a", True) is first
    assert BUILDS == [("t_cached_a", True)]
    assert first == q.render(_count_rows("t_cached_a", True))  # what an uncached render gives
    other = q.cached(_count_rows, "t_cached_a", False)
    assert other != first and "WHERE" not in other
    assert q.cached(_count_rows, 'we"ird', True).startswith('SELECT COUNT(*) FROM "we""ird"')


def test_per_call_values_go_in_as_named_parameters() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t_tagged (x INTEGER)")
    con.execute("INSERT INTO t_tagged VALUES (1), (2)")
    text = q.cached(_tagged, "t_tagged")
    assert "$tag" in text
    assert con.execute(text, {"tag": "a'; DROP TABLE t_tagged; --"}).fetchall() == [
        ("a'; DROP TABLE t_tagged; --", 1),
        ("a'; DROP TABLE t_tagged; --", 2),
    ]
    assert con.execute("SELECT count(*) FROM t_tagged").fetchone() == (2,)
