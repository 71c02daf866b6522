"""Helpers to build SQL as sqlglot syntax trees (never by string formatting)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import Any

import sqlglot
from sqlglot import exp

DIALECT = "duckdb"

SQL_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "number": "DOUBLE",
    "boolean": "BOOLEAN",
    "timestamp": "TIMESTAMP",
}


def ident(name: str) -> exp.Identifier:
    """A always-quoted identifier, safe for any user-supplied name."""
    return exp.to_identifier(name, quoted=True)


def col(name: str, table: str | None = None) -> exp.Column:
    return exp.Column(this=ident(name), table=ident(table) if table else None)


def table(name: str) -> exp.Table:
    return exp.Table(this=ident(name))


def create_temp(
    name: str, query: exp.Expr, kind: str = "TABLE", *, replace: bool = True
) -> exp.Create:
    """CREATE [OR REPLACE] TEMP TABLE (or VIEW) ``name`` AS ``query``."""
    return exp.Create(
        this=table(name),
        kind=kind,
        replace=replace,
        expression=query,
        properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
    )


def drop(name: str, kind: str = "TABLE") -> exp.Drop:
    """DROP TABLE (or VIEW) IF EXISTS ``name``."""
    return exp.Drop(tables=[table(name)], kind=kind, exists=True)


def lit(value: Any) -> exp.Expr:
    """A literal built by the AST: strings are escaped by sqlglot, never interpolated."""
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, (int, float)):
        return exp.Literal.number(value)
    return exp.Literal.string(str(value))


def dtype(base: str) -> exp.DataType:
    return exp.DataType.build(SQL_TYPES[base], dialect=DIALECT)


def try_cast(e: exp.Expr, base: str) -> exp.Expr:
    return exp.TryCast(this=e, to=dtype(base))


def func(name: str, *args: exp.Expr) -> exp.Expr:
    """A function call by name (resolved by sqlglot to its typed node when known)."""
    return exp.func(name, *args, dialect=DIALECT)


def render(e: exp.Expr, dialect: str = DIALECT) -> str:
    return e.sql(dialect=dialect)


def parse_static(sql: str) -> exp.Expr:
    """Parse a fixed SQL snippet written in this code base (never user input)."""
    parsed = sqlglot.parse_one(sql, dialect=DIALECT)
    assert parsed is not None
    return parsed


@functools.lru_cache(maxsize=512)
def _rendered(build: Callable[..., exp.Expr], args: tuple[Hashable, ...]) -> str:
    return render(build(*args))


def cached(build: Callable[..., exp.Expr], *args: Hashable) -> str:
    """``render(build(*args))``, built and rendered once per ``(build, args)`` and then reused
    (bounded, least recently used out; thread-safe).

    For statements a small import runs every time: building and rendering their trees costs
    more CPU, holding the GIL, than DuckDB takes to run them, and sqlglot's parent links make
    every tree a reference cycle only a stop-the-world collection frees. ``build`` must depend
    only on its arguments (per-call values go in as placeholders, e.g. ``exp.Placeholder``)."""
    return _rendered(build, args)
