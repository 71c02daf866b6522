"""Recommenders from similar items and similar people: category affinity, item co-occurrence,
segment popularity, and a blend of several recommenders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import sparse

from microseg.errors import ConfigError
from microseg.personalize.recommend_data import Interactions
from microseg.personalize.recommenders import (
    Recommender,
    SignalWeights,
    _take_rows,
    best_contributor,
    interest_matrix,
    top_per_row,
)
from microseg.store import Store


def _row_normalise(mat: sparse.csr_matrix) -> sparse.csr_matrix:
    sums = np.asarray(mat.sum(axis=1)).ravel()
    inv = np.divide(1.0, sums, out=np.zeros_like(sums, dtype=float), where=sums > 0)
    return sparse.csr_matrix(sparse.diags(inv) @ mat)


class CategoryAffinityRecommender(Recommender):
    """Top items of the profile's preferred categories (recency-weighted interest).

    ``categories`` maps item id -> category and overrides the events' category column (useful
    when categories come from a catalogue, or are derived from product names).
    """

    name = "category_affinity"

    def __init__(
        self,
        *,
        half_life_days: float = 30.0,
        weights: SignalWeights = SignalWeights(),
        top_categories: int = 3,
        categories: pd.Series | None = None,
    ) -> None:
        super().__init__()
        self.half_life_days = half_life_days
        self.weights = weights
        self.top_categories = top_categories
        self.categories = categories
        self.affinity = sparse.csr_matrix((0, 0))
        self.item_scores = sparse.csr_matrix((0, 0))
        self.item_category = np.zeros(0, dtype=int)
        self.category_names = pd.Index([])

    def _fit(self, data: Interactions) -> None:
        if self.categories is not None:
            cat_of_item = self.categories.reindex(data.items).reset_index(drop=True)
            cat_of_item = cat_of_item[cat_of_item.notna()]
        else:
            cat_of_item = data.item_categories()
        codes, names = pd.factorize(cat_of_item)
        self.category_names = pd.Index(names)
        self.item_category = np.full(data.n_items, -1, dtype=int)
        self.item_category[cat_of_item.index.to_numpy(dtype=int)] = codes
        n_cat = len(names)
        has = self.item_category >= 0
        # items x categories 0/1
        ic = sparse.csr_matrix(
            (np.ones(int(has.sum())), (np.nonzero(has)[0], self.item_category[has])),
            shape=(data.n_items, n_cat),
        )
        interest = interest_matrix(data, self.weights, self.half_life_days)
        affinity = top_per_row(sparse.csr_matrix(interest @ ic), self.top_categories)
        self.affinity = _row_normalise(affinity)
        # item strength inside its category: all profiles' interest, scaled to 1 per category
        strength = np.asarray(interest_matrix(data, self.weights, None).sum(axis=0)).ravel()
        best = np.zeros(n_cat)
        np.maximum.at(best, self.item_category[has], strength[has])
        scaled = np.zeros(data.n_items)
        scaled[has] = strength[has] / np.where(
            best[self.item_category[has]] > 0, best[self.item_category[has]], 1
        )
        self.item_scores = sparse.csr_matrix(ic.T.multiply(scaled[None, :]))

    def _scores(self, rows: np.ndarray) -> tuple[np.ndarray, Any]:
        return (_take_rows(self.affinity, rows) @ self.item_scores).toarray(), None

    def _reasons(self, rows: np.ndarray, items: np.ndarray, ctx: Any) -> list[str]:
        cats = self.item_category[items]
        return [f"you like {self.category_names[c]}" if c >= 0 else "category" for c in cats]


class ItemCooccurrenceRecommender(Recommender):
    """ "People who bought X also bought Y": item-item cosine or lift over baskets or profiles.

    Co-occurrence counts are ``X.T @ X`` of a sparse 0/1 matrix (``unit="basket"``: orders or
    sessions; ``"profile"``: everything a profile bought). Each item keeps its ``neighbours``
    most similar items with at least ``min_support`` co-occurrences. A profile's score for an
    item sums the similarity to the items in its (recency-weighted) history.
    """

    name = "cooccurrence"

    def __init__(
        self,
        *,
        unit: Literal["basket", "profile"] = "profile",
        similarity: Literal["cosine", "lift"] = "cosine",
        neighbours: int = 10,  # best of 5-100 on an Online Retail validation split (Jun-Aug)
        min_support: int = 2,
        half_life_days: float | None = 90.0,
        weights: SignalWeights = SignalWeights(),
        include_views: bool = False,
    ) -> None:
        super().__init__()
        self.unit, self.similarity = unit, similarity
        self.neighbours, self.min_support = neighbours, min_support
        self.half_life_days, self.weights = half_life_days, weights
        self.include_views = include_views
        self.sim = sparse.csr_matrix((0, 0))
        self.history = sparse.csr_matrix((0, 0))

    def _occurrence(self, data: Interactions) -> sparse.csr_matrix:
        if self.unit == "basket":
            x = data.baskets()
            if self.include_views:
                sessions = data.events[data.events["session_id"].notna()]
                codes, _ = pd.factorize(sessions["session_id"])
                views = sparse.csr_matrix(
                    (np.ones(len(sessions)), (codes, sessions["i"].to_numpy())),
                    shape=(int(codes.max()) + 1 if len(codes) else 0, data.n_items),
                )
                x = sparse.vstack([x, views]).tocsr()
        elif self.include_views:
            x = interest_matrix(data, SignalWeights(1.0, 1.0, 1.0), None)
        else:
            x = data.matrix("is_purchase")
        x = sparse.csr_matrix(x)
        x.data[:] = 1.0
        return x

    def _fit(self, data: Interactions) -> None:
        x = self._occurrence(data)
        counts = sparse.csr_matrix(x.T @ x)
        support = counts.diagonal().astype(float)
        counts.setdiag(0)
        counts.eliminate_zeros()
        counts.data[counts.data < self.min_support] = 0
        counts.eliminate_zeros()
        coo = counts.tocoo()
        if self.similarity == "cosine":
            denom = np.sqrt(support[coo.row] * support[coo.col])
            vals = coo.data / denom
        elif self.similarity == "lift":
            vals = coo.data * x.shape[0] / (support[coo.row] * support[coo.col])
        else:
            raise ConfigError(f"unknown similarity '{self.similarity}' (cosine or lift)")
        sim = sparse.csr_matrix((vals, (coo.row, coo.col)), shape=counts.shape)
        self.sim = top_per_row(sim, self.neighbours)
        weights = self.weights if self.include_views else SignalWeights(1.0, 0.0, 0.0)
        self.history = interest_matrix(data, weights, self.half_life_days)

    def neighbours_of(self, item: str, n: int = 10) -> pd.DataFrame:
        """The ``n`` items most similar to ``item``: item, similarity."""
        data = self._require()
        idx = data.items.get_indexer([item])[0]
        if idx < 0:
            return pd.DataFrame({"item": [], "similarity": []})
        row = self.sim.getrow(idx).tocoo()
        order = np.argsort(-row.data)[:n]
        return pd.DataFrame(
            {"item": data.items.to_numpy()[row.col[order]], "similarity": row.data[order]}
        )

    def _scores(self, rows: np.ndarray) -> tuple[np.ndarray, Any]:
        hist = _take_rows(self.history, rows)
        return (hist @ self.sim).toarray(), hist

    def _reasons(self, rows: np.ndarray, items: np.ndarray, ctx: Any) -> list[str]:
        hist, r_idx = ctx
        data = self._require()
        best = best_contributor(hist, self.sim, r_idx, items)
        names = data.item_labels()
        return [f"goes with {names[b]}" if b >= 0 else "bought together" for b in best]


class SegmentPopularityRecommender(Recommender):
    """What members of the profile's segments bought most (share of members who bought it).

    Memberships come from the ``memberships`` table (or the ``memberships`` frame with columns
    segment, profile_id). With ``strict_as_of`` a stored segment computed after the data's
    ``as_of`` is skipped: its membership would leak the future into an offline evaluation.
    """

    name = "segment_popularity"

    def __init__(
        self,
        store: Store | None = None,
        *,
        memberships: pd.DataFrame | None = None,
        segments: Sequence[str] | None = None,
        min_members: int = 5,
        strict_as_of: bool = True,
    ) -> None:
        super().__init__()
        if store is None and memberships is None:
            raise ConfigError("segment popularity needs a store or a memberships frame")
        self.store, self.frame = store, memberships
        self.segments, self.min_members, self.strict_as_of = segments, min_members, strict_as_of
        self.skipped: list[str] = []
        self.member = sparse.csr_matrix((0, 0))
        self.share = sparse.csr_matrix((0, 0))
        self.segment_names = pd.Index([])

    def _memberships(self, data: Interactions) -> pd.DataFrame:
        if self.frame is not None:
            df = self.frame[["segment", "profile_id"]]
        else:
            assert self.store is not None
            df = self.store.df(
                "SELECT m.segment, m.profile_id, coalesce(s.as_of, s.computed_at) AS as_of"
                " FROM memberships m LEFT JOIN segments s ON s.name = m.segment"
            )
            if self.strict_as_of:
                late = df["as_of"].isna() | (df["as_of"] > pd.Timestamp(data.as_of))
                self.skipped = sorted(set(df.loc[late, "segment"]))
                df = df[~late]
        if self.segments is not None:
            df = df[df["segment"].isin(list(self.segments))]
        return df

    def _fit(self, data: Interactions) -> None:
        df = self._memberships(data)
        sizes = df.groupby("segment")["profile_id"].nunique()
        df = df[df["segment"].isin(sizes[sizes >= self.min_members].index)]
        df = df[data.profiles.get_indexer(df["profile_id"]) >= 0]
        codes, names = pd.factorize(df["segment"])
        self.segment_names = pd.Index(names)
        rows = data.profiles.get_indexer(df["profile_id"])
        self.member = sparse.csr_matrix(
            (np.ones(len(df)), (rows, codes)), shape=(data.n_profiles, len(names))
        )
        self.member.data[:] = 1.0
        buyers = data.matrix("is_purchase", binary=True)
        counts = sparse.csr_matrix(self.member.T @ buyers)
        size = np.asarray(self.member.sum(axis=0)).ravel()
        inv = np.divide(1.0, size, out=np.zeros_like(size, dtype=float), where=size > 0)
        self.share = sparse.csr_matrix(sparse.diags(inv) @ counts)

    def _scores(self, rows: np.ndarray) -> tuple[np.ndarray, Any]:
        member = _row_normalise(_take_rows(self.member, rows))
        return (member @ self.share).toarray(), member

    def _reasons(self, rows: np.ndarray, items: np.ndarray, ctx: Any) -> list[str]:
        member, r_idx = ctx
        best = best_contributor(member, self.share, r_idx, items)
        names = self.segment_names
        return [f"popular in {names[b]}" if b >= 0 else "popular" for b in best]


class BlendedRecommender(Recommender):
    """Weighted sum of component scores, each scaled to [0, 1] per profile; the reason is the
    reason of the component contributing most to that item."""

    name = "blend"

    def __init__(self, components: Sequence[tuple[Recommender, float]]) -> None:
        super().__init__()
        if not components:
            raise ConfigError("a blend needs at least one component")
        self.components = list(components)

    def _fit(self, data: Interactions) -> None:
        for rec, _ in self.components:
            rec.fit(data)

    def _scores(self, rows: np.ndarray) -> tuple[np.ndarray, Any]:
        parts = []
        total: np.ndarray | None = None
        for rec, weight in self.components:
            raw, ctx = rec._scores(rows)
            raw = np.maximum(np.asarray(raw, dtype=float), 0.0)
            top = raw.max(axis=1, keepdims=True) if raw.size else raw
            scaled = weight * np.divide(raw, top, out=np.zeros_like(raw), where=top > 0)
            parts.append((scaled, ctx))
            total = scaled if total is None else total + scaled
        assert total is not None
        return total, parts

    def _reasons(self, rows: np.ndarray, items: np.ndarray, ctx: Any) -> list[str]:
        parts, r_idx = ctx
        contrib = np.stack([p[0][r_idx, items] for p in parts])
        best = np.argmax(contrib, axis=0)
        out = np.empty(len(items), dtype=object)
        for c, (rec, _) in enumerate(self.components):
            mask = best == c
            if mask.any():
                out[mask] = rec._reasons(rows[mask], items[mask], (parts[c][1], r_idx[mask]))
        return list(out)
