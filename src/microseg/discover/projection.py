"""2-D projections of clustered profiles (PCA, t-SNE, UMAP) saved as PNG and HTML."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["METHODS", "project_2d", "save_projection"]

METHODS = ("pca", "tsne", "umap")


def project_2d(
    Z: np.ndarray, *, method: str = "pca", max_points: int = 5000, random_state: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Project (a sample of at most ``max_points`` of) ``Z`` to 2-D; returns (coords, row indices)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    rng = np.random.default_rng(random_state)
    idx = np.sort(rng.choice(len(Z), size=min(len(Z), max_points), replace=False))
    sample = np.asarray(Z)[idx]
    if sample.shape[1] < 2:
        return np.column_stack([sample[:, 0], np.zeros(len(sample))]), idx
    if method == "pca":
        from sklearn.decomposition import PCA

        coords = PCA(n_components=2, random_state=random_state).fit_transform(sample)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(5, (len(sample) - 1) // 3)))
        coords = TSNE(
            n_components=2, perplexity=perplexity, random_state=random_state, init="pca"
        ).fit_transform(sample)
    else:
        try:
            import umap
        except ImportError:
            raise ValueError(
                "method 'umap' needs the umap-learn package (pip install umap-learn)"
            ) from None
        coords = umap.UMAP(n_components=2, random_state=random_state).fit_transform(sample)
    return np.asarray(coords), idx


def save_projection(
    coords: np.ndarray,
    labels: np.ndarray,
    names: dict[int, str],
    out: str | Path,
    *,
    title: str = "Clusters",
    embed_plotly: bool = True,
) -> tuple[Path, Path]:
    """Write ``<out>.png`` (matplotlib) and ``<out>.html`` (plotly); returns both paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.express as px

    base = Path(out)
    base.parent.mkdir(parents=True, exist_ok=True)
    png, html = base.with_suffix(".png"), base.with_suffix(".html")
    legend = [names.get(int(c), f"cluster {int(c)}") for c in labels]
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    for c in sorted(set(labels.tolist())):
        mask = labels == c
        ax.scatter(
            coords[mask, 0],
            coords[mask, 1],
            s=6,
            alpha=0.6,
            label=names.get(int(c), f"cluster {int(c)}"),
        )
    ax.set_title(title)
    ax.set_xlabel("component 1")
    ax.set_ylabel("component 2")
    ax.legend(markerscale=3, fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    frame = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], "persona": legend})
    figure = px.scatter(frame, x="x", y="y", color="persona", title=title, opacity=0.6)
    figure.write_html(html, include_plotlyjs=True if embed_plotly else "cdn")
    return png, html
