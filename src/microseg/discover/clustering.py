"""Cluster discovery (S5/S6): scaling, optional PCA, k / model selection, stability.

``ClusterDiscovery`` is a scikit-learn style estimator over a features DataFrame indexed by
profile_id (e.g. the ``traits`` table). Model and k selection runs on a random sample
(silhouette, Davies-Bouldin, Calinski-Harabasz); K-Means switches to MiniBatch K-Means on
large data; algorithms that do not scale (hierarchical, DBSCAN, HDBSCAN) are fitted on the
sample and extended to every profile by nearest labelled neighbour. Bootstrap stability is
the mean adjusted Rand index between the reference labels and refits on resamples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import DBSCAN, HDBSCAN, AgglomerativeClustering, KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.utils.validation import check_is_fitted

from microseg.console import Progress, SilentProgress

__all__ = ["ALGORITHMS", "SCALINGS", "ClusterDiscovery", "discover_subsegments"]

ALGORITHMS = ("kmeans", "minibatch_kmeans", "hierarchical", "dbscan", "hdbscan", "gmm")
SCALINGS = ("standard", "minmax", "none")
_K_ALGORITHMS = ("kmeans", "minibatch_kmeans", "hierarchical", "gmm")


class ClusterDiscovery(ClusterMixin, BaseEstimator):
    """Find clusters of profiles in a numeric feature table.

    Parameters
    ----------
    algorithm : one of ALGORITHMS, or a list of them to select the best by ``metric``.
    n_clusters : int | None
        Fixed k; None sweeps ``k_range`` and keeps the best by ``metric``.
    k_range : tuple[int, int]
        Inclusive k range for the sweep.
    scaling : {"standard", "minmax", "none"}
    pca : int | float | None
        PCA components (int) or explained-variance share (float in (0, 1)); None = no PCA.
    n_init : int
        Initialisations per K-Means / GMM fit (the best is kept).
    sample_size : int
        Profiles used for selection metrics, the k sweep and non-scalable algorithms.
    metric : {"silhouette", "davies_bouldin", "calinski_harabasz"}
    n_bootstrap : int
        Bootstrap refits for stability (0 = skip).
    large_data : int
        K-Means uses MiniBatch K-Means above this many profiles.
    eps, min_samples : DBSCAN parameters (in scaled units); min_cluster_size : HDBSCAN.
    random_state : int | None
    """

    def __init__(
        self,
        *,
        algorithm: str | tuple[str, ...] | list[str] = "kmeans",
        n_clusters: int | None = None,
        k_range: tuple[int, int] = (2, 12),
        scaling: str = "standard",
        pca: int | float | None = None,
        n_init: int = 3,
        sample_size: int = 10_000,
        metric: str = "silhouette",
        n_bootstrap: int = 0,
        large_data: int = 100_000,
        eps: float = 0.5,
        min_samples: int = 10,
        min_cluster_size: int = 50,
        random_state: int | None = 0,
    ) -> None:
        self.algorithm = algorithm
        self.n_clusters = n_clusters
        self.k_range = k_range
        self.scaling = scaling
        self.pca = pca
        self.n_init = n_init
        self.sample_size = sample_size
        self.metric = metric
        self.n_bootstrap = n_bootstrap
        self.large_data = large_data
        self.eps = eps
        self.min_samples = min_samples
        self.min_cluster_size = min_cluster_size
        self.random_state = random_state

    # -- validation and preprocessing --------------------------------------------------------
    def _algorithms(self) -> list[str]:
        algos = [self.algorithm] if isinstance(self.algorithm, str) else list(self.algorithm)
        bad = [a for a in algos if a not in ALGORITHMS]
        if bad or not algos:
            raise ValueError(f"algorithm must be among {ALGORITHMS}, got {self.algorithm!r}")
        return algos

    def _validate(self, X: pd.DataFrame) -> None:
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {self.scaling!r}")
        if self.metric not in ("silhouette", "davies_bouldin", "calinski_harabasz"):
            raise ValueError(
                f"metric must be silhouette, davies_bouldin or calinski_harabasz, got {self.metric!r}"
            )
        lo, hi = self.k_range
        if not 2 <= lo <= hi:
            raise ValueError(f"k_range must satisfy 2 <= low <= high, got {self.k_range}")
        if self.n_clusters is not None and self.n_clusters < 2:
            raise ValueError(f"n_clusters must be >= 2 or None, got {self.n_clusters}")
        non_numeric = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
        if non_numeric:
            raise ValueError(f"features must be numeric; non-numeric columns: {non_numeric}")
        if len(X) < 3 or X.shape[1] == 0:
            raise ValueError(f"need >= 3 profiles and >= 1 feature, got shape {X.shape}")

    def _preprocess_fit(self, X: pd.DataFrame) -> np.ndarray:
        values = X.to_numpy(dtype=float)
        self.fill_values_ = np.nan_to_num(np.nanmedian(values, axis=0))
        values = np.where(np.isnan(values), self.fill_values_, values)
        self.scaler_: Any = {"standard": StandardScaler(), "minmax": MinMaxScaler(), "none": None}[
            self.scaling
        ]
        if self.scaler_ is not None:
            values = self.scaler_.fit_transform(values)
        self.pca_: PCA | None = None
        if self.pca is not None:
            self.pca_ = PCA(n_components=self.pca, random_state=self.random_state)
            values = self.pca_.fit_transform(values)
        return np.asarray(values, dtype=np.float64)

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """Scaled (and PCA-projected) features, as the clustering sees them."""
        check_is_fitted(self, "fill_values_")
        cols = [str(c) for c in X.columns]
        if cols != list(self.feature_names_in_):
            raise ValueError(f"columns {cols} differ from fitted {list(self.feature_names_in_)}")
        values = X.to_numpy(dtype=float)
        values = np.where(np.isnan(values), self.fill_values_, values)
        if self.scaler_ is not None:
            values = self.scaler_.transform(values)
        if self.pca_ is not None:
            values = self.pca_.transform(values)
        return np.asarray(values, dtype=np.float64)

    # -- single fits -------------------------------------------------------------------------
    def _make(self, algorithm: str, k: int, n_rows: int, seed: int | None) -> Any:
        if algorithm == "kmeans" and n_rows > self.large_data:
            algorithm = "minibatch_kmeans"
        if algorithm == "kmeans":
            return KMeans(n_clusters=k, n_init=self.n_init, random_state=seed)
        if algorithm == "minibatch_kmeans":
            return MiniBatchKMeans(
                n_clusters=k, n_init=self.n_init, batch_size=4096, random_state=seed
            )
        if algorithm == "hierarchical":
            return AgglomerativeClustering(n_clusters=k, linkage="ward")
        if algorithm == "gmm":
            return GaussianMixture(n_components=k, n_init=self.n_init, random_state=seed)
        if algorithm == "dbscan":
            return DBSCAN(eps=self.eps, min_samples=self.min_samples)
        return HDBSCAN(
            min_cluster_size=self.min_cluster_size, min_samples=self.min_samples, copy=True
        )

    @staticmethod
    def _scores(Z: np.ndarray, labels: np.ndarray, seed: int | None) -> dict[str, float]:
        mask = labels >= 0
        n_found = len(np.unique(labels[mask]))
        if n_found < 2 or n_found >= mask.sum():
            return {"silhouette": np.nan, "davies_bouldin": np.nan, "calinski_harabasz": np.nan}
        Zm, lm = Z[mask], labels[mask]
        return {
            "silhouette": float(
                silhouette_score(Zm, lm, sample_size=min(len(Zm), 4000), random_state=seed)
            ),
            "davies_bouldin": float(davies_bouldin_score(Zm, lm)),
            "calinski_harabasz": float(calinski_harabasz_score(Zm, lm)),
        }

    def _better(self, a: float, b: float) -> bool:
        if np.isnan(a):
            return False
        if np.isnan(b):
            return True
        return a < b if self.metric == "davies_bouldin" else a > b

    # -- fit -----------------------------------------------------------------------------------
    def fit(
        self, X: pd.DataFrame, y: None = None, *, progress: Progress | None = None
    ) -> ClusterDiscovery:
        """Select algorithm and k on a sample, fit, label every profile; returns self."""
        bar = progress or SilentProgress()
        frame = pd.DataFrame(X)
        self._validate(frame)
        algos = self._algorithms()
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.n_features_in_ = frame.shape[1]
        Z = self._preprocess_fit(frame)
        rng = np.random.default_rng(self.random_state)
        n = len(Z)
        sample_idx = np.sort(rng.choice(n, size=min(n, self.sample_size), replace=False))
        Zs = Z[sample_idx]
        lo, hi = self.k_range
        hi = min(hi, len(Zs) - 1)
        candidates: list[tuple[str, int | None]] = []
        for algo in algos:
            if algo in _K_ALGORITHMS:
                ks = [self.n_clusters] if self.n_clusters is not None else list(range(lo, hi + 1))
                candidates += [(algo, k) for k in ks]
            else:
                candidates.append((algo, None))
        rows = []
        best: tuple[str, int | None] | None = None
        best_value = np.nan
        bar.start("cluster selection", total=len(candidates))
        try:
            for algo, k in candidates:
                labels = self._fit_labels(algo, k or 0, Zs, self.random_state)
                scores = self._scores(Zs, labels, self.random_state)
                n_found = len(np.unique(labels[labels >= 0]))
                rows.append(
                    {
                        "algorithm": algo,
                        "k": n_found,
                        "requested_k": k,
                        **scores,
                        "noise_share": float(np.mean(labels < 0)),
                    }
                )
                if best is None or self._better(scores[self.metric], best_value):
                    best, best_value = (algo, k), scores[self.metric]
                bar.update(1, note=f"{algo} k={n_found} {self.metric}={scores[self.metric]:.3f}")
        finally:
            bar.stop()
        assert best is not None
        self.selection_ = pd.DataFrame(rows)
        self.algorithm_, k_best = best
        self._final_fit(Z, Zs, k_best or 0)
        ids = frame.index
        self.labels_ = self.predict_scaled(Z)
        self.profile_index_ = ids
        self.n_clusters_ = len(np.unique(self.labels_[self.labels_ >= 0]))
        self.stability_: float | None = None
        self.stability_runs_: list[float] = []
        if self.n_bootstrap > 0:
            self._bootstrap(Zs, k_best or 0)
        return self

    def _fit_labels(self, algo: str, k: int, Zs: np.ndarray, seed: int | None) -> np.ndarray:
        model = self._make(algo, k, len(Zs), seed)
        return np.asarray(model.fit_predict(Zs))

    def _final_fit(self, Z: np.ndarray, Zs: np.ndarray, k: int) -> None:
        algo = self.algorithm_
        if algo in ("kmeans", "minibatch_kmeans", "gmm"):
            self.model_ = self._make(algo, k, len(Z), self.random_state).fit(Z)
            self.assigner_: Any = None
            return
        self.model_ = self._make(algo, k, len(Zs), self.random_state)
        labels = np.asarray(self.model_.fit_predict(Zs))
        if algo == "hierarchical":
            self.assigner_ = NearestCentroid().fit(Zs, labels)
        else:
            self.assigner_ = KNeighborsClassifier(n_neighbors=1).fit(Zs, labels)

    def predict_scaled(self, Z: np.ndarray) -> np.ndarray:
        """Cluster labels for already-transformed rows (-1 = noise for density methods)."""
        check_is_fitted(self, "model_")
        if self.assigner_ is None:
            return np.asarray(self.model_.predict(Z), dtype=int)
        return np.asarray(self.assigner_.predict(Z), dtype=int)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Cluster label for each row of ``X``."""
        return self.predict_scaled(self.transform(pd.DataFrame(X)))

    def _bootstrap(self, Zs: np.ndarray, k: int) -> None:
        reference = self.predict_scaled(Zs)
        rng = np.random.default_rng(None if self.random_state is None else self.random_state + 1)
        runs = []
        for b in range(self.n_bootstrap):
            idx = rng.choice(len(Zs), size=len(Zs), replace=True)
            seed = None if self.random_state is None else self.random_state + 1000 + b
            model = self._make(self.algorithm_, k, len(Zs), seed)
            labels = np.asarray(model.fit_predict(Zs[idx]))
            if hasattr(model, "predict"):
                relabel = np.asarray(model.predict(Zs))
            elif self.algorithm_ == "hierarchical":
                relabel = NearestCentroid().fit(Zs[idx], labels).predict(Zs)
            else:
                relabel = KNeighborsClassifier(n_neighbors=1).fit(Zs[idx], labels).predict(Zs)
            runs.append(float(adjusted_rand_score(reference, relabel)))
        self.stability_runs_ = runs
        self.stability_ = float(np.mean(runs))

    # -- summaries ---------------------------------------------------------------------------
    def labels_series(self) -> pd.Series:
        """Labels indexed by profile id."""
        check_is_fitted(self, "labels_")
        return pd.Series(self.labels_, index=self.profile_index_, name="cluster")

    def cluster_sizes(self) -> pd.DataFrame:
        """Profiles per cluster and their share."""
        counts = self.labels_series().value_counts().sort_index()
        return pd.DataFrame({"size": counts, "share": counts / counts.sum()})


def discover_subsegments(
    features: pd.DataFrame, members: pd.Index | list[Any], **params: Any
) -> ClusterDiscovery:
    """Sub-segment discovery (S6): cluster only the members of an existing segment.

    ``params`` go to :class:`ClusterDiscovery`. Profiles are then described against the
    parent segment (pass the same member subset as the reference to ``describe_clusters``).
    """
    wanted = pd.Index(members)
    missing = wanted.difference(features.index)
    if len(missing):
        raise ValueError(
            f"{len(missing)} segment members have no features, e.g. {list(missing[:5])}"
        )
    subset = features.loc[wanted]
    if len(subset) < 10:
        raise ValueError(
            f"segment has {len(subset)} profiles; sub-segment discovery needs at least 10"
        )
    return ClusterDiscovery(**params).fit(subset)
