"""Personas backed by numbers, projection plots, and clustering Online Retail RFM."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from microseg.discover.clustering import ClusterDiscovery
from microseg.discover.personas import describe_clusters, feature_profiles
from microseg.discover.projection import project_2d, save_projection


def rfm_like(seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    groups = {
        # name: (n, recency_days, frequency, monetary)
        "champions": (300, 5, 20, 3000),
        "lapsed": (500, 200, 2, 150),
        "new": (200, 10, 1, 60),
    }
    parts, labels = [], []
    for i, (n, r, f, m) in enumerate(groups.values()):
        parts.append(
            pd.DataFrame(
                {
                    "recency_days": rng.normal(r, r * 0.15, n).clip(0),
                    "frequency": rng.normal(f, max(f * 0.15, 0.3), n).clip(1),
                    "monetary": rng.normal(m, m * 0.15, n).clip(1),
                }
            )
        )
        labels += [i] * n
    X = pd.concat(parts, ignore_index=True)
    X.index = pd.Index([f"p{i}" for i in range(len(X))], name="profile_id")
    return X, pd.Series(labels, index=X.index)


def test_personas_name_what_distinguishes_each_cluster_with_numbers() -> None:
    X, labels = rfm_like()
    personas = {p.cluster: p for p in describe_clusters(X, labels)}
    assert personas[0].name.startswith("High-Value") or "Frequent" in personas[0].name
    assert "Lapsed" in personas[1].name
    assert personas[0].size == 300 and personas[0].share == pytest.approx(0.3)
    assert len({p.name for p in personas.values()}) == 3
    for p in personas.values():
        assert len(p.narrative) >= 2
        for sentence in p.narrative:
            assert re.search(r"\d", sentence), sentence  # every sentence carries a number
    champions = personas[0].distinguishing
    mean = X.loc[labels == 0, "monetary"].mean()
    assert champions.loc["monetary", "cluster_mean"] == pytest.approx(mean)
    assert f"{mean:,.0f}" in personas[0].text()
    profiles = feature_profiles(X, labels)
    assert list(profiles.index) == [0, 1, 2, "all"]


def test_typical_cluster_and_noise_are_named_honestly() -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    labels = pd.Series(np.r_[np.zeros(190, int), -np.ones(10, int)], index=X.index)
    personas = describe_clusters(X, labels, min_effect=5.0)
    names = {p.cluster: p.name for p in personas}
    assert names[-1] == "Unclustered" and names[0] == "Typical"
    assert "No feature differs" in personas[1].text()


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_projection_writes_png_and_html(tmp_path: Path, method: str) -> None:
    X, labels = rfm_like()
    model = ClusterDiscovery(n_clusters=3).fit(X)
    assert adjusted_rand_score(labels, model.labels_) > 0.98  # planted groups recovered
    coords, idx = project_2d(model.transform(X), method=method, max_points=200)
    assert coords.shape == (200, 2) and len(idx) == 200
    png, html = save_projection(
        coords, model.labels_[idx], {0: "A", 1: "B", 2: "C"}, tmp_path / "plot", embed_plotly=False
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = html.read_text()
    assert "plotly" in text and ('"A"' in text or "A" in text)
    with pytest.raises(ValueError, match="method"):
        project_2d(model.transform(X), method="mds")


def retail_rfm(data_dir: Path) -> pd.DataFrame:
    from microseg.predict.features import point_in_time_features

    path = data_dir / "online_retail_uci" / "online_retail.csv.gz"
    if not path.exists():
        pytest.skip(f"Online Retail not found at {path}")
    raw = pd.read_csv(
        path,
        dtype={"InvoiceNo": str, "StockCode": str, "CustomerID": "Int64"},
        usecols=["InvoiceNo", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID"],
    )
    raw = raw.dropna(subset=["CustomerID"])
    raw = raw[
        ~raw["InvoiceNo"].str.startswith("C") & (raw["Quantity"] > 0) & (raw["UnitPrice"] > 0)
    ]
    events = pd.DataFrame(
        {
            "profile_id": raw["CustomerID"].astype(str),
            "ts": pd.to_datetime(raw["InvoiceDate"]),
            "value": raw["Quantity"] * raw["UnitPrice"],
        }
    )
    f = point_in_time_features(events, "2011-12-10", windows=())
    return np.log1p(f[["recency_days", "frequency", "monetary"]])


def test_online_retail_rfm_clusters_are_distinct_and_stable(data_dir: Path) -> None:
    X = retail_rfm(data_dir)
    assert len(X) == 4338  # customers with at least one valid purchase (the usual RFM count)
    model = ClusterDiscovery(k_range=(2, 6), sample_size=3000, n_bootstrap=3).fit(X)
    assert 2 <= model.n_clusters_ <= 6
    assert model.selection_["silhouette"].max() > 0.3
    assert model.stability_ is not None and model.stability_ > 0.8
    personas = describe_clusters(np.expm1(X), model.labels_series())
    assert len(personas) == model.n_clusters_
