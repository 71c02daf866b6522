"""CLI: ``microseg discover`` — clusters, personas, projection plots, saved cluster runs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from microseg.cli import console, workspace


def register(app: typer.Typer) -> None:
    @app.command()
    def discover(
        features: Path | None = typer.Option(
            None,
            "--features",
            "-f",
            help="CSV/Parquet with profile_id + columns (default: traits table)",
        ),
        traits: str | None = typer.Option(
            None, "--traits", "-t", help="comma-separated feature columns (default: all numeric)"
        ),
        algorithm: str = typer.Option(
            "kmeans",
            help="kmeans, minibatch_kmeans, hierarchical, dbscan, hdbscan, gmm; comma-separate to compare",
        ),
        k: int | None = typer.Option(None, "--k", help="fixed number of clusters (default: sweep)"),
        k_min: int = typer.Option(2, help="smallest k in the sweep"),
        k_max: int = typer.Option(12, help="largest k in the sweep"),
        scaling: str = typer.Option("standard", help="standard, minmax or none"),
        pca: float | None = typer.Option(None, help="PCA components (>=1) or variance share (<1)"),
        metric: str = typer.Option(
            "silhouette", help="silhouette, davies_bouldin or calinski_harabasz"
        ),
        n_init: int = typer.Option(3, help="initialisations per fit"),
        sample_size: int = typer.Option(10_000, help="profiles used for selection metrics"),
        bootstrap: int = typer.Option(0, help="bootstrap refits for stability (adjusted Rand)"),
        members: Path | None = typer.Option(
            None,
            help="file of profile ids (one per line / profile_id column): discover sub-segments inside them",
        ),
        plot: Path | None = typer.Option(None, help="write <plot>.png and <plot>.html projections"),
        projection: str = typer.Option("pca", help="pca, tsne or umap"),
        save_run: str | None = typer.Option(
            None, help="store memberships as cluster run NAME (trait cluster.NAME in segments)"
        ),
        seed: int = typer.Option(0, help="random_state"),
    ) -> None:
        """Discover clusters and describe them as personas."""
        import pandas as pd

        from microseg.discover import (
            ClusterDiscovery,
            describe_clusters,
            project_2d,
            save_projection,
        )
        from microseg.predict.registry import store_cluster_membership
        from microseg.predict.table import read_feature_table, select_columns

        with workspace() as ws:
            table = read_feature_table(features, ws.store)
            X = select_columns(table, [t.strip() for t in traits.split(",")] if traits else None)
            if members is not None:
                ids = pd.read_csv(members, dtype=str)
                col = "profile_id" if "profile_id" in ids.columns else ids.columns[0]
                wanted = (
                    pd.Index(ids[col].astype(str))
                    if col == "profile_id"
                    else pd.Index([col, *ids[col].astype(str)])
                )
                missing = wanted.difference(X.index)
                if len(missing):
                    raise typer.BadParameter(
                        f"{len(missing)} member ids have no features, e.g. {list(missing[:3])}"
                    )
                X = X.loc[wanted]
            algos = [a.strip() for a in algorithm.split(",")]
            pca_arg: int | float | None = None if pca is None else (int(pca) if pca >= 1 else pca)
            model = ClusterDiscovery(
                algorithm=algos if len(algos) > 1 else algos[0],
                n_clusters=k,
                k_range=(k_min, k_max),
                scaling=scaling,
                pca=pca_arg,
                metric=metric,
                n_init=n_init,
                sample_size=sample_size,
                n_bootstrap=bootstrap,
                random_state=seed,
            )
            try:
                model.fit(X, progress=ws.progress)
            except ValueError as exc:
                raise typer.BadParameter(str(exc)) from None
            labels = model.labels_series()
            personas = describe_clusters(X, labels)  # members: compared with the parent segment
            sel = model.selection_
            t = Table(
                title=f"{model.algorithm_} with {model.n_clusters_} clusters on {len(X):,} profiles"
            )
            for c in ("cluster", "persona", "size", "share"):
                t.add_column(c)
            for p in personas:
                t.add_row(str(p.cluster), p.name, f"{p.size:,}", f"{p.share:.1%}")
            console.print(t)
            best = sel.loc[
                sel[metric].idxmax() if metric != "davies_bouldin" else sel[metric].idxmin()
            ]
            console.print(
                f"selection: {metric}={best[metric]:.3f}, silhouette={best['silhouette']:.3f}, "
                f"davies_bouldin={best['davies_bouldin']:.3f}, calinski_harabasz={best['calinski_harabasz']:.1f}"
            )
            if model.stability_ is not None:
                console.print(
                    f"stability: mean adjusted Rand {model.stability_:.3f} over {bootstrap} bootstraps"
                )
            for p in personas:
                console.print(f"[bold]{p.name}[/bold]: {p.text()}", highlight=False)
            if plot is not None:
                coords, idx = project_2d(model.transform(X), method=projection, random_state=seed)
                names = {p.cluster: p.name for p in personas}
                png, html = save_projection(
                    coords, model.labels_[idx], names, plot, title=f"{model.algorithm_} personas"
                )
                console.print(f"wrote {png} and {html}")
            if save_run:
                n = store_cluster_membership(
                    ws.store, save_run, labels, {p.cluster: p.name for p in personas}
                )
                console.print(
                    f"saved {n:,} memberships as cluster run {save_run!r}; make a segment with"
                    f" `microseg segments from-cluster {save_run} <cluster> --name <name>`"
                    f" or use trait `cluster.{save_run}` in a rule"
                )
