"""The audit trail: who read or changed what, including every PII decryption.

Rows live in ``audit_log`` (logged_at, actor, action, target, details JSON). PII reads are
logged as action ``pii.decrypt``: one row per call, a bulk read is one row listing the
profiles (so "who read this person's data" stays answerable without one row per value).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pandas as pd
from sqlglot import exp

from microseg.store import Store, utcnow
from microseg.store import sql as q

PII_DECRYPT = "pii.decrypt"


def audit_pii_read(
    store: Store,
    actor: str,
    profile_ids: Sequence[str],
    fields: Sequence[str],
    *,
    purpose: str | None = None,
) -> None:
    """Record one decryption of ``fields`` for ``profile_ids`` (nothing when nothing was read)."""
    pids = sorted({str(p) for p in profile_ids})
    if not pids or not fields:
        return
    target = pids[0] if len(pids) == 1 else f"{len(pids)} profiles"
    details: dict[str, Any] = {"fields": sorted(set(fields)), "profiles": pids}
    if purpose:
        details["purpose"] = purpose
    store.execute(
        "INSERT INTO audit_log VALUES (?, ?, ?, ?, ?)",
        [utcnow(), actor, PII_DECRYPT, target, json.dumps(details)],
    )


def audit_entries(
    store: Store,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    about: str | None = None,
    since: datetime | None = None,
    limit: int = 200,
) -> pd.DataFrame:
    """Audit rows, newest first. ``action`` may end in ``*`` (prefix); ``about`` matches the
    target or a profile listed in a bulk row's details."""
    where: list[exp.Expr] = []
    if actor:
        where.append(exp.EQ(this=q.col("actor"), expression=q.lit(actor)))
    if action:
        if action.endswith("*"):
            where.append(q.func("starts_with", q.col("action"), q.lit(action[:-1])))
        else:
            where.append(exp.EQ(this=q.col("action"), expression=q.lit(action)))
    if target:
        where.append(exp.EQ(this=q.col("target"), expression=q.lit(target)))
    if about:
        where.append(about_condition(about))
    if since:
        where.append(exp.GTE(this=q.col("logged_at"), expression=q.lit(since.isoformat(sep=" "))))
    select = exp.select("logged_at", "actor", "action", "target", "details").from_(
        q.table("audit_log")
    )
    if where:
        select = select.where(exp.and_(*where))
    select = select.order_by(exp.Ordered(this=q.col("logged_at"), desc=True)).limit(
        q.lit(int(limit))
    )
    return store.df(select)


def about_condition(profile_id: str) -> exp.Expr:
    """Rows whose target is the profile or whose details list it (``profiles`` array or
    ``profile_id``)."""
    profiles = q.func("json_extract", q.col("details"), q.lit("$.profiles"))
    listed = exp.Case(
        ifs=[
            exp.If(
                this=exp.EQ(
                    this=q.func("json_type", q.col("details"), q.lit("$.profiles")),
                    expression=q.lit("ARRAY"),
                ),
                true=q.func("list_contains", exp.cast(profiles, "VARCHAR[]"), q.lit(profile_id)),
            )
        ],
        default=exp.false(),
    )
    named = exp.EQ(
        this=q.func("json_extract_string", q.col("details"), q.lit("$.profile_id")),
        expression=q.lit(profile_id),
    )
    return exp.or_(
        exp.EQ(this=q.col("target"), expression=q.lit(profile_id)),
        q.func("coalesce", listed, exp.false()),
        q.func("coalesce", named, exp.false()),
    )
