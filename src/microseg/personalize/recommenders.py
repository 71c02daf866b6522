"""Recommenders with one interface: ``fit(interactions)`` then ``recommend(profiles, k)``.

Every recommender scores a batch of profiles against every item (dense ``float`` rows built from
sparse matrices), drops non-positive scores and, with ``exclude_seen``, the items the profile
already bought before ``as_of``; the top ``k`` come back as rows ``profile_id, rank, item, score,
reason``. Item-to-item similarity is computed with sparse matrix products, never by looping over
item pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, Self

import numpy as np
import pandas as pd
from scipy import sparse

from microseg.errors import ConfigError
from microseg.personalize.recommend_data import Interactions

BATCH = 1024
BATCH_CELLS = 8_000_000  # dense scores per batch (64 MB of float64): fewer rows for big catalogues
COLUMNS = ["profile_id", "rank", "item", "score", "reason"]


def _take_rows(mat: sparse.csr_matrix, rows: np.ndarray) -> sparse.csr_matrix:
    """Rows of ``mat``; a row index of -1 (unknown profile) gives an empty row."""
    if mat.shape[0] == 0:
        return sparse.csr_matrix((len(rows), mat.shape[1]))
    out = mat[np.maximum(rows, 0)]
    if (rows < 0).any():
        out = sparse.diags((rows >= 0).astype(float)) @ out
    return sparse.csr_matrix(out)


def top_per_row(mat: sparse.csr_matrix, n: int) -> sparse.csr_matrix:
    """Keep the ``n`` largest entries of every row (vectorised: one sort of all entries)."""
    mat = sparse.csr_matrix(mat)
    mat.sum_duplicates()
    counts = np.diff(mat.indptr)
    if mat.nnz == 0 or counts.max() <= n:
        return mat
    row = np.repeat(np.arange(mat.shape[0]), counts)
    data = mat.data.astype(float)
    span = float(data.max() - data.min()) or 1.0
    # one float key sorts rows ascending and, inside a row, values descending
    key = row + (1.0 - (data - data.min()) / span) * 0.999
    order = np.argsort(key, kind="stable")
    rank = np.arange(mat.nnz) - mat.indptr[row[order]]
    keep = order[rank < n]
    return sparse.csr_matrix((data[keep], (row[keep], mat.indices[keep])), shape=mat.shape)


def best_contributor(
    left: sparse.csr_matrix, right: sparse.csr_matrix, r_idx: np.ndarray, items: np.ndarray
) -> np.ndarray:
    """For each pair p: the j maximising ``left[r_idx[p], j] * right[j, items[p]]`` (-1 if none).

    Explains a score ``left @ right`` (e.g. which bought item made an item recommended) for
    many pairs at once, without a Python loop.
    """
    left = sparse.csr_matrix(left)
    counts = np.diff(left.indptr)[r_idx]
    total = int(counts.sum())
    best = np.full(len(r_idx), -1, dtype=int)
    if total == 0:
        return best
    pair = np.repeat(np.arange(len(r_idx)), counts)
    first = np.repeat(left.indptr[r_idx] - (np.cumsum(counts) - counts), counts)
    pos = np.arange(total) + first
    j, h = left.indices[pos], left.data[pos]
    contrib = h * np.asarray(sparse.csr_matrix(right)[j, items[pair]]).ravel()
    order = np.lexsort((-contrib, pair))
    pair_s, contrib_s, j_s = pair[order], contrib[order], j[order]
    lead = np.r_[True, pair_s[1:] != pair_s[:-1]]
    ok = lead & (contrib_s > 0)
    best[pair_s[ok]] = j_s[ok]
    return best


class Recommender:
    """Base class: subclasses implement ``_fit`` and ``_scores`` (and ``_reasons`` if useful)."""

    name = "base"
    reason = "recommended"

    def __init__(self) -> None:
        self.data: Interactions | None = None
        self._seen: sparse.csr_matrix | None = None

    def fit(self, data: Interactions) -> Self:
        """Learn from ``data`` (events strictly before ``data.as_of``)."""
        self.data = data
        self._seen = data.matrix("is_purchase", binary=True)
        self._fit(data)
        return self

    def _fit(self, data: Interactions) -> None:
        """Subclass hook."""

    def _scores(self, rows: np.ndarray) -> tuple[np.ndarray, Any]:
        """(len(rows) x n_items) scores (<= 0 means "not recommended") and context for reasons."""
        raise NotImplementedError

    def _reasons(self, rows: np.ndarray, items: np.ndarray, ctx: Any) -> list[str]:
        """One reason per (row, item) pair of the chosen recommendations."""
        return [self.reason] * len(rows)

    def _require(self) -> Interactions:
        if self.data is None:
            raise ConfigError(f"recommender '{self.name}' is not fitted; call fit() first")
        return self.data

    def recommend(
        self, profile_ids: Sequence[str], k: int = 10, *, exclude_seen: bool = True
    ) -> pd.DataFrame:
        """Top ``k`` items per profile: profile_id, rank (1 = best), item, score, reason."""
        data = self._require()
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        ids = pd.Index(list(profile_ids), dtype=object)
        all_rows = data.profiles.get_indexer(ids)
        frames = []
        step = max(1, min(BATCH, BATCH_CELLS // max(data.n_items, 1)))
        for start in range(0, len(ids), step):
            rows = all_rows[start : start + step]
            frames.append(self._batch(ids[start : start + step], rows, k, exclude_seen))
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
        return pd.concat(frames, ignore_index=True)

    def _batch(self, ids: pd.Index, rows: np.ndarray, k: int, exclude_seen: bool) -> pd.DataFrame:
        data = self._require()
        scores, ctx = self._scores(rows)
        scores = np.asarray(scores, dtype=float).copy()
        if exclude_seen and self._seen is not None:
            seen = _take_rows(self._seen, rows).tocoo()
            scores[seen.row, seen.col] = 0.0
        scores[~np.isfinite(scores)] = 0.0
        kk = min(k, scores.shape[1])
        if kk == 0:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
        top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        top_scores = np.take_along_axis(scores, top, axis=1)
        # best first; ties broken by item code so results are deterministic
        order = np.lexsort((top, -top_scores), axis=1)
        top = np.take_along_axis(top, order, axis=1)
        top_scores = np.take_along_axis(top_scores, order, axis=1)
        r_idx, rank = np.nonzero(top_scores > 0)
        items = top[r_idx, rank]
        reasons = self._reasons(rows[r_idx], items, (ctx, r_idx)) if len(items) else []
        return pd.DataFrame(
            {
                "profile_id": ids.to_numpy()[r_idx],
                "rank": rank + 1,
                "item": data.items.to_numpy()[items],
                "score": top_scores[r_idx, rank],
                "reason": reasons,
            }
        )


class PopularityRecommender(Recommender):
    """Most-bought items (distinct buyers, optionally recency-weighted): the baseline."""

    name = "popularity"
    reason = "popular"

    def __init__(self, half_life_days: float | None = None) -> None:
        super().__init__()
        self.half_life_days = half_life_days
        self.popularity = np.zeros(0)

    def _fit(self, data: Interactions) -> None:
        buyers = data.matrix("is_purchase", binary=self.half_life_days is None)
        if self.half_life_days is not None:
            buyers = data.matrix("is_purchase", half_life_days=self.half_life_days)
        self.popularity = np.asarray(buyers.sum(axis=0)).ravel()

    def _scores(self, rows: np.ndarray) -> tuple[np.ndarray, Any]:
        return np.broadcast_to(self.popularity, (len(rows), len(self.popularity))), None


class BuyAgainRecommender(Recommender):
    """Items the profile bought before, by recency-weighted frequency ("buy it again").

    Only useful with ``exclude_seen=False`` (every candidate is an item already bought).
    """

    name = "buy_again"
    reason = "bought before"

    def __init__(self, half_life_days: float = 60.0) -> None:
        super().__init__()
        self.half_life_days = half_life_days
        self.bought = sparse.csr_matrix((0, 0))

    def _fit(self, data: Interactions) -> None:
        self.bought = data.matrix("is_purchase", half_life_days=self.half_life_days)

    def _scores(self, rows: np.ndarray) -> tuple[np.ndarray, Any]:
        return _take_rows(self.bought, rows).toarray(), None


class RecentlyViewedRecommender(Recommender):
    """Items the profile viewed recently (more recent and more often = higher)."""

    name = "recently_viewed"
    reason = "recently viewed"

    def __init__(self, half_life_days: float = 7.0, lookback: timedelta = timedelta(days=30)):
        super().__init__()
        self.half_life_days = half_life_days
        self.lookback = lookback
        self.views = sparse.csr_matrix((0, 0))

    def _fit(self, data: Interactions) -> None:
        recent = data.events["ts"] >= pd.Timestamp(data.as_of - self.lookback)
        self.views = data.matrix("is_view", half_life_days=self.half_life_days, mask=recent)

    def _scores(self, rows: np.ndarray) -> tuple[np.ndarray, Any]:
        return _take_rows(self.views, rows).toarray(), None


def abandoned_items(
    data: Interactions,
    *,
    lookback: timedelta = timedelta(days=30),
    min_idle: timedelta = timedelta(minutes=30),
    scope: Literal["checkout", "item"] = "checkout",
) -> pd.DataFrame:
    """Cart adds not followed by a checkout: profile_id, item, u, i, added_at.

    The latest add of an item counts. It is cleared by a removal of the item or a purchase of
    the item at or after the add, and (``scope="checkout"``) by any checkout of the profile at
    or after the add. Adds older than ``lookback`` are forgotten; adds newer than ``min_idle``
    before ``as_of`` are still "shopping", not abandoned. Only events before ``as_of`` count.
    """
    ev = data.events
    as_of = pd.Timestamp(data.as_of)
    keys = ["u", "i"]
    adds = ev[ev["is_cart"]].groupby(keys, as_index=False)["ts"].max()
    adds = adds[(adds["ts"] >= as_of - lookback) & (adds["ts"] <= as_of - min_idle)]
    if adds.empty:
        return pd.DataFrame(columns=["profile_id", "item", "u", "i", "added_at"])
    removed = ev[ev["is_remove"]].groupby(keys)["ts"].max().rename("removed")
    bought = ev[ev["is_purchase"]].groupby(keys)["ts"].max().rename("bought")
    adds = adds.join(removed, on=keys).join(bought, on=keys)
    cleared = (adds["removed"] >= adds["ts"]) | (adds["bought"] >= adds["ts"])
    if scope == "checkout":
        checkout = ev[ev["is_checkout"]].groupby("u")["ts"].max().rename("checkout")
        adds = adds.join(checkout, on="u")
        cleared |= adds["checkout"] >= adds["ts"]
    out = adds[~cleared.fillna(False).astype(bool)]
    return pd.DataFrame(
        {
            "profile_id": data.profiles.to_numpy()[out["u"].to_numpy()],
            "item": data.items.to_numpy()[out["i"].to_numpy()],
            "u": out["u"].to_numpy(),
            "i": out["i"].to_numpy(),
            "added_at": out["ts"].to_numpy(),
        }
    )


class AbandonedCartRecommender(Recommender):
    """Items left in the cart (see :func:`abandoned_items`), most recent first."""

    name = "abandoned_cart"
    reason = "left in cart"

    def __init__(
        self,
        lookback: timedelta = timedelta(days=30),
        min_idle: timedelta = timedelta(minutes=30),
        scope: Literal["checkout", "item"] = "checkout",
    ) -> None:
        super().__init__()
        self.lookback, self.min_idle, self.scope = lookback, min_idle, scope
        self.carts = sparse.csr_matrix((0, 0))

    def _fit(self, data: Interactions) -> None:
        ab = abandoned_items(data, lookback=self.lookback, min_idle=self.min_idle, scope=self.scope)
        # 1 for the newest add, decaying with age so several items keep their order
        age = data.age_days(pd.Series(pd.to_datetime(ab["added_at"])))
        weight = np.power(0.5, age / max(self.lookback.total_seconds() / 86400.0, 1e-9))
        self.carts = sparse.csr_matrix(
            (weight, (ab["u"].to_numpy(dtype=int), ab["i"].to_numpy(dtype=int))),
            shape=(data.n_profiles, data.n_items),
        )

    def _scores(self, rows: np.ndarray) -> tuple[np.ndarray, Any]:
        return _take_rows(self.carts, rows).toarray(), None


@dataclass(frozen=True)
class SignalWeights:
    """How much each kind of interaction says about interest."""

    purchase: float = 3.0
    cart: float = 2.0
    view: float = 1.0


def interest_matrix(
    data: Interactions, weights: SignalWeights, half_life_days: float | None
) -> sparse.csr_matrix:
    """Profiles x items: weighted, recency-decayed sum of purchases, cart adds and views."""
    out = sparse.csr_matrix((data.n_profiles, data.n_items))
    for flag, w in (("is_purchase", weights.purchase), ("is_cart", weights.cart)):
        if w:
            out = out + w * data.matrix(flag, half_life_days=half_life_days)
    if weights.view:
        out = out + weights.view * data.matrix("is_view", half_life_days=half_life_days)
    return sparse.csr_matrix(out)
