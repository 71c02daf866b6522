"""Rewrite the DuckDB-flavoured sqlglot trees of the compilers into trees Spark SQL runs alike.

The trait and segment compilers build ONE syntax tree per query. Most nodes render to Spark
unchanged through ``expr.sql(dialect="spark")`` (FILTER clauses, ARG_MIN/ARG_MAX -> MIN_BY/
MAX_BY, REGEXP_MATCHES -> RLIKE, STARTS_WITH -> STARTSWITH, LIST_CONTAINS -> ARRAY_CONTAINS,
QUALIFY -> a ROW_NUMBER subquery, ``INTERVAL 'n' SECOND``). The nodes below render to Spark
SQL that either does not exist or means something else, so they are replaced first:

- ``EPOCH(ts)`` (fractional seconds) would become ``UNIX_TIMESTAMP(ts)`` (whole seconds):
  -> ``CAST(UNIX_MICROS(ts) AS DOUBLE) / 1000000``, exactly DuckDB's value.
- ``QUANTILE_CONT(x, q)`` would become ``PERCENTILE_CONT(x, q)`` (not a Spark call form):
  -> ``PERCENTILE(x, q)``: the same exact linear interpolation between closest ranks.
- ``ARRAY_AGG(v ORDER BY k1, k2)`` would lose its ORDER BY (``COLLECT_LIST``):
  -> ``TRANSFORM(SORT_ARRAY(COLLECT_LIST(STRUCT(k1, k2, v))), x -> x.v)``.
- the random bucket ``CAST('0x' || hex AS BIGINT)`` is NULL in Spark:
  -> ``CAST(CONV(hex, 16, 10) AS BIGINT)``: the same md5-prefix integer on both engines.
"""

from __future__ import annotations

from sqlglot import exp

SPARK = "spark"
_MICROS = 1_000_000


class UnsupportedOnSpark(ValueError):
    """A compiled construct has no faithful Spark SQL equivalent (yet)."""


def _epoch(node: exp.TimeToUnix) -> exp.Expr:
    micros = exp.Anonymous(this="UNIX_MICROS", expressions=[node.this])
    return exp.Paren(
        this=exp.Div(
            this=exp.Cast(this=micros, to=exp.DataType.build("DOUBLE")),
            expression=exp.Literal.number(_MICROS),
        )
    )


def _percentile(node: exp.PercentileCont) -> exp.Expr:
    return exp.Anonymous(this="PERCENTILE", expressions=[node.this, node.expression])


def _ordered_list(node: exp.ArrayAgg) -> exp.Expr:
    """ARRAY_AGG(v ORDER BY keys) as a sorted COLLECT_LIST of structs projected back to v."""
    order = node.this
    assert isinstance(order, exp.Order)
    fields: list[exp.Expr] = []
    for i, key in enumerate(order.expressions):
        if not isinstance(key, exp.Ordered):
            key = exp.Ordered(this=key)
        if key.args.get("desc"):
            raise UnsupportedOnSpark("ARRAY_AGG ordered DESC has no Spark rewrite")
        fields.append(exp.PropertyEQ(this=exp.to_identifier(f"k{i}"), expression=key.this))
    fields.append(exp.PropertyEQ(this=exp.to_identifier("v"), expression=order.this))
    collected = exp.Anonymous(this="COLLECT_LIST", expressions=[exp.Struct(expressions=fields)])
    if node.args.get("filter") is not None:  # pragma: no cover - the compilers never build it
        raise UnsupportedOnSpark("filtered ARRAY_AGG has no Spark rewrite")
    x = exp.to_identifier("x")
    project = exp.Lambda(
        this=exp.Dot(this=exp.column(x), expression=exp.to_identifier("v")),
        expressions=[x],
    )
    return exp.Anonymous(
        this="TRANSFORM",
        expressions=[exp.Anonymous(this="SORT_ARRAY", expressions=[collected]), project],
    )


def _hex_prefix(node: exp.Cast) -> exp.Expr | None:
    """The ``hex`` of ``CAST('0x' || hex AS <int>)``, else None."""
    inner = node.this
    if not isinstance(inner, exp.DPipe) or not node.to.is_type(*exp.DataType.INTEGER_TYPES):
        return None
    left = inner.this
    if isinstance(left, exp.Literal) and left.is_string and left.this.lower() == "0x":
        return inner.expression
    return None


def _rewrite(node: exp.Expr) -> exp.Expr:
    if isinstance(node, exp.TimeToUnix):
        return _epoch(node)
    if isinstance(node, exp.PercentileCont):
        return _percentile(node)
    if isinstance(node, exp.ArrayAgg) and isinstance(node.this, exp.Order):
        return _ordered_list(node)
    if isinstance(node, exp.Cast):
        hexa = _hex_prefix(node)
        if hexa is not None:
            conv = exp.Anonymous(
                this="CONV",
                expressions=[hexa, exp.Literal.number(16), exp.Literal.number(10)],
            )
            return exp.Cast(this=conv, to=node.to)
    return node


def to_spark(tree: exp.Expr) -> exp.Expr:
    """A rewritten copy of a compiled tree whose Spark rendering means what DuckDB's does."""
    return tree.copy().transform(_rewrite)


def spark_sql(tree: exp.Expr, pretty: bool = False) -> str:
    """The Spark SQL text of a compiled tree (after ``to_spark``)."""
    return to_spark(tree).sql(dialect=SPARK, pretty=pretty)
