"""Cluster discovery: planted segments are recovered, k is selected, results are stable."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from microseg.console import RecordingProgress
from microseg.discover.clustering import ClusterDiscovery, discover_subsegments


def planted(
    n: int = 3000, k: int = 4, d: int = 6, seed: int = 0, spread: float = 1.0
) -> tuple[pd.DataFrame, np.ndarray]:
    """k planted segments in d features on very different scales (money, counts, days)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, size=(k, d))
    truth = rng.integers(0, k, size=n)
    Z = centers[truth] + rng.normal(0, spread, size=(n, d))
    scales = np.array([1000.0, 1.0, 30.0, 0.01, 5.0, 100.0])[:d]
    X = pd.DataFrame(Z * scales + 50, columns=[f"f{i}" for i in range(d)])
    X.index = pd.Index([f"p{i:05d}" for i in range(n)], name="profile_id")
    return X, truth


def test_kmeans_sweep_finds_planted_k_and_labels() -> None:
    X, truth = planted()
    progress = RecordingProgress()
    model = ClusterDiscovery(algorithm="kmeans", k_range=(2, 8), sample_size=2000).fit(
        X, progress=progress
    )
    assert model.n_clusters_ == 4
    assert adjusted_rand_score(truth, model.labels_) > 0.95
    assert set(model.selection_["requested_k"]) == set(range(2, 9))
    assert {"silhouette", "davies_bouldin", "calinski_harabasz"} <= set(model.selection_.columns)
    best = model.selection_.loc[model.selection_["silhouette"].idxmax()]
    assert best["k"] == 4
    assert progress.events[0][0] == "start" and progress.events[-1][0] == "stop"
    assert sum(1 for e in progress.events if e[0] == "update") == 7
    sizes = model.cluster_sizes()
    assert sizes["size"].sum() == len(X) and sizes["share"].sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(model.predict(X.iloc[:50]), model.labels_[:50])


def test_scaling_matters_on_mixed_units() -> None:
    X, truth = planted(seed=1)
    scaled = ClusterDiscovery(n_clusters=4, scaling="standard").fit(X)
    minmax = ClusterDiscovery(n_clusters=4, scaling="minmax").fit(X)
    raw = ClusterDiscovery(n_clusters=4, scaling="none").fit(X)
    assert adjusted_rand_score(truth, scaled.labels_) > 0.9
    assert adjusted_rand_score(truth, minmax.labels_) > 0.9
    assert (
        adjusted_rand_score(truth, raw.labels_) < adjusted_rand_score(truth, scaled.labels_) - 0.2
    )


@pytest.mark.parametrize("algorithm", ["minibatch_kmeans", "hierarchical", "gmm", "hdbscan"])
def test_other_algorithms_recover_planted_segments(algorithm: str) -> None:
    X, truth = planted(n=2000, seed=3, spread=0.8)
    model = ClusterDiscovery(
        algorithm=algorithm, k_range=(3, 5), sample_size=1200, min_cluster_size=40
    ).fit(X)
    labelled = model.labels_ >= 0
    assert labelled.mean() > 0.8
    assert adjusted_rand_score(truth[labelled], model.labels_[labelled]) > 0.9, model.selection_


def test_dbscan_marks_noise_and_model_comparison_picks_a_winner() -> None:
    X, _ = planted(n=1500, seed=3, spread=0.6)
    noisy = ClusterDiscovery(algorithm="dbscan", eps=0.3, min_samples=10).fit(X)
    assert noisy.selection_["noise_share"].iloc[0] > 0
    both = ClusterDiscovery(algorithm=["kmeans", "gmm"], k_range=(3, 5)).fit(X)
    assert set(both.selection_["algorithm"]) == {"kmeans", "gmm"}
    assert both.algorithm_ in {"kmeans", "gmm"} and both.n_clusters_ == 4


def test_pca_and_bootstrap_stability() -> None:
    X, truth = planted(seed=4)
    model = ClusterDiscovery(n_clusters=4, pca=0.9, n_bootstrap=4, random_state=1).fit(X)
    assert model.pca_ is not None and model.pca_.n_components_ < X.shape[1]
    assert adjusted_rand_score(truth, model.labels_) > 0.9
    assert model.transform(X).shape[1] == model.pca_.n_components_
    assert (
        model.stability_ is not None and model.stability_ > 0.9 and len(model.stability_runs_) == 4
    )
    blob = pd.DataFrame(np.random.default_rng(0).normal(size=(1500, 3)), columns=list("abc"))
    unstable = ClusterDiscovery(n_clusters=6, n_bootstrap=4, n_init=1).fit(blob)
    assert unstable.stability_ is not None and unstable.stability_ < model.stability_


def test_large_data_switches_to_minibatch() -> None:
    X, truth = planted(n=5000, seed=5)
    model = ClusterDiscovery(n_clusters=4, large_data=1000).fit(X)
    assert type(model.model_).__name__ == "MiniBatchKMeans"
    assert adjusted_rand_score(truth, model.labels_) > 0.9


def test_subsegments_inside_a_segment() -> None:
    X, truth = planted(seed=6)
    members = X.index[truth == 0]
    inner = discover_subsegments(X, members, k_range=(2, 4))
    assert len(inner.labels_) == len(members) and inner.profile_index_.equals(members)
    with pytest.raises(ValueError, match="no features"):
        discover_subsegments(X, ["nobody"])


def test_bad_input_raises_value_errors() -> None:
    X, _ = planted(n=100)
    with pytest.raises(ValueError, match="scaling"):
        ClusterDiscovery(scaling="log").fit(X)
    with pytest.raises(ValueError, match="algorithm"):
        ClusterDiscovery(algorithm="spectral").fit(X)
    with pytest.raises(ValueError, match="k_range"):
        ClusterDiscovery(k_range=(1, 3)).fit(X)
    with pytest.raises(ValueError, match="non-numeric"):
        ClusterDiscovery().fit(X.assign(country="UK"))
    fitted = ClusterDiscovery(n_clusters=2).fit(X)
    with pytest.raises(ValueError, match="differ from fitted"):
        fitted.predict(X[["f1", "f0", "f2", "f3", "f4", "f5"]])
