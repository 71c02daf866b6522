"""Read a features table (profile_id + numeric columns) from a file or the ``traits`` table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from sqlglot import exp

from microseg.errors import NotFoundError, did_you_mean
from microseg.store import sql
from microseg.store.duckdb_store import Store

__all__ = ["read_feature_table", "select_columns"]


def read_feature_table(path: str | Path | None = None, store: Store | None = None) -> pd.DataFrame:
    """Features indexed by profile_id from a CSV / Parquet file, else from the store's ``traits``."""
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise NotFoundError(f"features file {p} does not exist")
        if p.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(p)
        else:
            frame = pd.read_csv(p, dtype={"profile_id": str})
    elif store is not None and store.table_exists("traits"):
        frame = store.df(exp.select("*").from_(sql.table("traits")))
    else:
        raise NotFoundError("no features: pass --features FILE or compute the traits table first")
    if "profile_id" not in frame.columns:
        raise NotFoundError(f"features need a profile_id column; found {list(frame.columns)[:20]}")
    frame["profile_id"] = frame["profile_id"].astype(str)
    if frame["profile_id"].duplicated().any():
        dup = frame.loc[frame["profile_id"].duplicated(), "profile_id"].head(5).tolist()
        raise ValueError(f"profile_id must be unique in the features table; duplicated: {dup}")
    return frame.set_index("profile_id")


def select_columns(
    frame: pd.DataFrame, names: Sequence[str] | None, *, exclude: Sequence[str] = ()
) -> pd.DataFrame:
    """Pick ``names`` (all numeric columns when None); unknown names raise NotFoundError."""
    if names:
        unknown = [n for n in names if n not in frame.columns]
        if unknown:
            raise NotFoundError(
                f"unknown feature {unknown[0]!r}{did_you_mean(unknown[0], frame.columns)}"
            )
        return frame[list(names)]
    numeric = [
        c
        for c in frame.columns
        if c not in exclude
        and (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))
    ]
    if not numeric:
        raise NotFoundError("the features table has no numeric columns")
    return frame[numeric].astype(float)
