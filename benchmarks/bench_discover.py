"""Discovery benchmarks: speed on 1 M x 16 and accuracy on planted / real data.

Run: python benchmarks/bench_discover.py [--rows 1000000] [--skip-real]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from microseg.discover import ClusterDiscovery, describe_clusters
from microseg.predict.features import point_in_time_features

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def planted(n: int, d: int = 16, k: int = 8, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, size=(k, d))
    truth = rng.integers(0, k, size=n)
    Z = centers[truth] + rng.normal(0, 1.0, size=(n, d)).astype(np.float64)
    scales = rng.uniform(0.01, 1000, size=d)
    X = pd.DataFrame(Z * scales, columns=[f"trait_{i}" for i in range(d)])
    return X, truth


def bench_speed(rows: int) -> None:
    X, truth = planted(rows)
    t0 = time.perf_counter()
    model = ClusterDiscovery(algorithm="kmeans", k_range=(2, 12), sample_size=20_000, n_init=3).fit(
        X
    )
    elapsed = time.perf_counter() - t0
    print(
        f"[speed] {rows:,} x {X.shape[1]} k-sweep 2..12: {elapsed:.1f} s; chose k={model.n_clusters_} "
        f"({type(model.model_).__name__}); ARI vs planted 8 segments = {adjusted_rand_score(truth, model.labels_):.4f}"
    )


def bench_planted_algorithms() -> None:
    X, truth = planted(20_000, d=16, k=8, seed=1)
    for algo in ("kmeans", "gmm", "hierarchical", "hdbscan"):
        t0 = time.perf_counter()
        m = ClusterDiscovery(
            algorithm=algo, k_range=(2, 12), sample_size=5000, n_bootstrap=3, min_cluster_size=50
        ).fit(X)
        mask = m.labels_ >= 0
        print(
            f"[planted] {algo}: k={m.n_clusters_}, ARI={adjusted_rand_score(truth[mask], m.labels_[mask]):.4f} "
            f"(labelled {mask.mean():.1%}), stability ARI={m.stability_:.3f}, {time.perf_counter() - t0:.1f} s"
        )


def bench_retail() -> None:
    path = DATA / "online_retail_uci" / "online_retail.csv.gz"
    raw = pd.read_csv(path, dtype={"InvoiceNo": str, "StockCode": str, "CustomerID": "Int64"})
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
    f = point_in_time_features(events, "2011-12-10", windows=())[
        ["recency_days", "frequency", "monetary"]
    ]
    X = np.log1p(f)
    m = ClusterDiscovery(k_range=(2, 8), sample_size=5000, n_bootstrap=5).fit(X)
    print(
        f"[retail RFM] {len(X):,} customers; chose k={m.n_clusters_}; bootstrap stability ARI={m.stability_:.3f}"
    )
    print(
        m.selection_[["k", "silhouette", "davies_bouldin", "calinski_harabasz"]]
        .round(3)
        .to_string(index=False)
    )
    for p in describe_clusters(f, m.labels_series()):
        print(f"  - {p.name}: {p.text()}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-real", action="store_true")
    args = parser.parse_args()
    bench_speed(args.rows)
    bench_planted_algorithms()
    if not args.skip_real:
        bench_retail()


if __name__ == "__main__":
    main()
