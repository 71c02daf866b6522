"""Model registry versions, stored scores and cluster memberships (migration 8)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from microseg.errors import NotFoundError
from microseg.predict.propensity import PropensityModel
from microseg.predict.registry import (
    list_models,
    load_model,
    read_scores,
    register_model,
    store_cluster_membership,
    store_scores,
)
from microseg.store import Store


@pytest.fixture
def store() -> Iterator[Store]:
    s = Store(None)
    yield s
    s.close()


def fitted_model(seed: int = 0) -> tuple[PropensityModel, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {"a": rng.normal(size=400), "b": rng.normal(size=400)}, index=[f"p{i}" for i in range(400)]
    )
    y = (X["a"] + rng.normal(size=400) > 0).astype(int)
    return PropensityModel(algorithm="logistic").fit(X, y), X


def test_migration_8_creates_tables(store: Store) -> None:
    assert store.version() >= 8
    for table in ("model_registry", "scores", "cluster_membership"):
        assert store.table_exists(table)
    assert list(store.columns("scores")) == ["profile_id", "model", "version", "score", "scored_at"]


def test_versions_increment_and_load_round_trips(store: Store) -> None:
    model, X = fitted_model()
    v1 = register_model(
        store,
        "buy30",
        model,
        kind="propensity/logistic",
        features=["a", "b"],
        target="buy",
        metrics={"roc_auc": 0.8},
    )
    v2 = register_model(
        store,
        "buy30",
        model,
        kind="propensity/logistic",
        features=["a", "b"],
        target="buy",
        metrics={"roc_auc": 0.81},
    )
    assert (v1, v2) == (1, 2)
    latest = load_model(store, "buy30")
    assert (
        latest.version == 2 and latest.metrics["roc_auc"] == 0.81 and latest.features == ["a", "b"]
    )
    np.testing.assert_allclose(latest.estimator.predict_proba(X), model.predict_proba(X))
    assert load_model(store, "buy30", 1).metrics["roc_auc"] == 0.8
    listing = list_models(store)
    assert listing["version"].tolist() == [2, 1]
    with pytest.raises(NotFoundError, match="did you mean 'buy30'"):
        load_model(store, "buy3O")
    with pytest.raises(NotFoundError, match="version 7"):
        load_model(store, "buy30", 7)
    assert store.scalar("SELECT count(*) FROM audit_log WHERE action = 'model.register'") == 2


def test_scores_round_trip_and_replace(store: Store) -> None:
    model, X = fitted_model()
    scores = model.score_profiles(X)
    assert store_scores(store, "buy30", 1, scores) == 400
    back = read_scores(store, "buy30")
    pd.testing.assert_series_equal(
        back, scores.sort_index().rename("buy30"), check_names=False, check_index_type=False
    )
    store_scores(store, "buy30", 1, scores.iloc[:10] * 0)
    assert store.scalar("SELECT count(*) FROM scores WHERE model = 'buy30'") == 10
    with pytest.raises(ValueError, match="duplicated"):
        store_scores(store, "buy30", 1, pd.Series([0.1, 0.2], index=["x", "x"]))
    with pytest.raises(NotFoundError):
        read_scores(store, "nothing")


def test_cluster_membership(store: Store) -> None:
    labels = pd.Series([0, 1, 1], index=["a", "b", "c"])
    assert store_cluster_membership(store, "rfm", labels, {0: "Recent Frequent", 1: "Lapsed"}) == 3
    rows = store.rows(
        "SELECT profile_id, cluster, persona FROM cluster_membership WHERE run = 'rfm' ORDER BY profile_id"
    )
    assert rows == [("a", 0, "Recent Frequent"), ("b", 1, "Lapsed"), ("c", 1, "Lapsed")]
    store_cluster_membership(store, "rfm", labels.iloc[:1])
    assert store.scalar("SELECT count(*) FROM cluster_membership") == 1
