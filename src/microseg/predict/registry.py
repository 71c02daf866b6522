"""Model registry with versions, and score / cluster-membership tables (store migration 8).

Artifacts are pickled estimators kept in the local store (trusted, single-tenant data);
never load a store file from an untrusted source.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from microseg.errors import NotFoundError, did_you_mean
from microseg.store.duckdb_store import Store, utcnow

__all__ = [
    "RegisteredModel",
    "list_models",
    "load_model",
    "read_scores",
    "register_model",
    "store_cluster_membership",
    "store_scores",
]


@dataclass(frozen=True)
class RegisteredModel:
    """One stored model version with its metadata and the unpickled estimator."""

    model: str
    version: int
    kind: str
    target: str | None
    features: list[str]
    params: dict[str, Any]
    metrics: dict[str, Any]
    trained_at: datetime
    as_of: datetime | None
    estimator: Any


def register_model(
    store: Store,
    name: str,
    estimator: Any,
    *,
    kind: str,
    features: list[str],
    target: str | None = None,
    params: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    as_of: datetime | pd.Timestamp | None = None,
) -> int:
    """Store a new version of model ``name``; returns the version number (1, 2, …)."""
    if not name or not name.strip():
        raise ValueError(f"model name must be non-empty, got {name!r}")
    with store.transaction():
        current = store.scalar("SELECT max(version) FROM model_registry WHERE model = ?", [name])
        version = int(current or 0) + 1
        store.execute(
            "INSERT INTO model_registry (model, version, kind, target, features, params, metrics, "
            "artifact, trained_at, as_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                name,
                version,
                kind,
                target,
                json.dumps(list(features)),
                json.dumps(params or {}, default=str),
                json.dumps(metrics or {}, default=str),
                pickle.dumps(estimator),
                utcnow(),
                None if as_of is None else pd.Timestamp(as_of).to_pydatetime(),
            ],
        )
    store.audit("microseg", "model.register", f"{name}@{version}", {"kind": kind, "target": target})
    return version


def list_models(store: Store) -> pd.DataFrame:
    """All model versions (without artifacts), newest first within each model."""
    return store.df(
        "SELECT model, version, kind, target, metrics, trained_at, as_of, status "
        "FROM model_registry ORDER BY model, version DESC"
    )


def load_model(store: Store, name: str, version: int | None = None) -> RegisteredModel:
    """Load model ``name`` at ``version`` (latest when None); NotFoundError if absent."""
    if version is None:
        row = store.rows(
            "SELECT * FROM model_registry WHERE model = ? ORDER BY version DESC LIMIT 1", [name]
        )
    else:
        row = store.rows(
            "SELECT * FROM model_registry WHERE model = ? AND version = ?", [name, version]
        )
    if not row:
        known = [r[0] for r in store.rows("SELECT DISTINCT model FROM model_registry")]
        hint = did_you_mean(name, known)
        at = "" if version is None else f" version {version}"
        raise NotFoundError(f"no model {name!r}{at}{hint}")
    cols = [c for c in store.columns("model_registry")]
    rec = dict(zip(cols, row[0], strict=True))
    return RegisteredModel(
        model=rec["model"],
        version=int(rec["version"]),
        kind=rec["kind"],
        target=rec["target"],
        features=json.loads(rec["features"] or "[]"),
        params=json.loads(rec["params"] or "{}"),
        metrics=json.loads(rec["metrics"] or "{}"),
        trained_at=rec["trained_at"],
        as_of=rec["as_of"],
        estimator=pickle.loads(rec["artifact"]),
    )


def store_scores(store: Store, model_name: str, version: int, scores: pd.Series) -> int:
    """Write ``scores`` (indexed by profile_id) for a model version, replacing earlier ones."""
    if scores.index.has_duplicates:
        dup = scores.index[scores.index.duplicated()][:5].tolist()
        raise ValueError(f"scores index must be unique profile ids; duplicated: {dup}")
    frame = pd.DataFrame(
        {
            "profile_id": scores.index.astype(str),
            "model": model_name,
            "version": int(version),
            "score": pd.to_numeric(scores, errors="raise").astype(float).to_numpy(),
            "scored_at": utcnow(),
        }
    )
    with store.transaction():
        store.execute(
            "DELETE FROM scores WHERE model = ? AND version = ?", [model_name, int(version)]
        )
        store.con.register("_microseg_scores_in", frame)
        try:
            store.execute(
                "INSERT INTO scores SELECT profile_id, model, version, score, scored_at FROM _microseg_scores_in"
            )
        finally:
            store.con.unregister("_microseg_scores_in")
    return len(frame)


def read_scores(store: Store, model_name: str, version: int | None = None) -> pd.Series:
    """Scores of one model (latest stored version when None) as a Series indexed by profile_id."""
    if version is None:
        version = store.scalar("SELECT max(version) FROM scores WHERE model = ?", [model_name])
        if version is None:
            raise NotFoundError(f"no scores stored for model {model_name!r}")
    df = store.df(
        "SELECT profile_id, score FROM scores WHERE model = ? AND version = ? ORDER BY profile_id",
        [model_name, int(version)],
    )
    return df.set_index("profile_id")["score"].rename(model_name)


def store_cluster_membership(
    store: Store, run: str, labels: pd.Series, personas: dict[int, str] | None = None
) -> int:
    """Write cluster labels (indexed by profile_id) for a discovery run, replacing earlier ones."""
    if labels.index.has_duplicates:
        raise ValueError("labels index must be unique profile ids")
    names = personas or {}
    frame = pd.DataFrame(
        {
            "profile_id": labels.index.astype(str),
            "run": run,
            "cluster": labels.astype(int).to_numpy(),
            "persona": [names.get(int(c)) for c in labels],
            "assigned_at": utcnow(),
        }
    )
    with store.transaction():
        store.execute("DELETE FROM cluster_membership WHERE run = ?", [run])
        store.con.register("_microseg_clusters_in", frame)
        try:
            store.execute(
                "INSERT INTO cluster_membership SELECT profile_id, run, cluster, persona, assigned_at "
                "FROM _microseg_clusters_in"
            )
        finally:
            store.con.unregister("_microseg_clusters_in")
    return len(frame)
