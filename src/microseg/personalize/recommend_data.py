"""Interaction data for the recommenders: which events count as what, loaded up to ``as_of``.

Event types and column names are configurable (:class:`EventMapping`) so the same code runs on
Online Retail (``purchase`` rows with ``product_id`` = StockCode, ``order_id`` = InvoiceNo) and on
a clickstream such as REES46 (``product_view`` / ``add_to_cart`` / ``purchase`` with a session).
The query is a sqlglot tree: column names and event types come from the mapping, never from
string formatting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from scipy import sparse
from sqlglot import exp

from microseg.errors import ConfigError, did_you_mean
from microseg.store import Store, sql

BASE_COLUMNS = ("profile_id", "ts", "event_type", "session_id")


@dataclass(frozen=True)
class EventMapping:
    """Which event types mean purchase / view / cart, and which columns hold item, category…"""

    purchase_types: tuple[str, ...] = ("purchase",)
    view_types: tuple[str, ...] = ("product_view",)
    cart_types: tuple[str, ...] = ("add_to_cart",)
    remove_types: tuple[str, ...] = ("remove_from_cart",)
    checkout_types: tuple[str, ...] = ("purchase", "checkout_completed", "order_completed")
    item_column: str = "product_id"
    category_column: str | None = "category"
    basket_column: str | None = "order_id"  # falls back to session_id when absent / null
    quantity_column: str | None = "quantity"  # purchase rows with quantity <= 0 are returns
    name_column: str | None = "product_name"
    price_column: str | None = "price"
    exclude_items: str | None = None  # regular expression of item ids to ignore (postage…)

    def event_types(self) -> list[str]:
        kinds = (
            self.purchase_types
            + self.view_types
            + self.cart_types
            + self.remove_types
            + self.checkout_types
        )
        return sorted(set(kinds))


ONLINE_RETAIL = EventMapping(
    category_column=None,
    # postage, carriage, manual, discount, fees, bank charges, samples, gift vouchers
    exclude_items=r"^(POST|DOT|C2|M|m|D|S|B|CRUK|PADS|BANK CHARGES|AMAZONFEE|gift_.*|DCGS.*)$",
)
REES46 = EventMapping(basket_column=None, quantity_column=None, name_column=None)


def _optional(have: dict[str, str], name: str | None) -> str | None:
    return name if name and name in have else None


def resolve_columns(store: Store, mapping: EventMapping) -> dict[str, str | None]:
    """Map roles (item, category, basket…) to event columns that exist; the item must exist."""
    have = store.columns("events")
    if mapping.item_column not in have:
        raise ConfigError(
            f"events have no item column '{mapping.item_column}'"
            + did_you_mean(mapping.item_column, have)
            + " (declare it as an event property in the taxonomy)"
        )
    return {
        "item": mapping.item_column,
        "category": _optional(have, mapping.category_column),
        "basket": _optional(have, mapping.basket_column),
        "quantity": _optional(have, mapping.quantity_column),
        "name": _optional(have, mapping.name_column),
        "price": _optional(have, mapping.price_column),
    }


def _event_query(
    cols: dict[str, str | None],
    mapping: EventMapping,
    as_of: datetime | None,
    since: datetime | None,
    profiles: Sequence[str] | None,
) -> tuple[exp.Select, list[object]]:
    """SELECT profile, ts, type, session, item, category, basket, name, price FROM events…"""
    params: list[object] = []
    item = sql.col(str(cols["item"]), "e")
    select = [
        exp.alias_(sql.col("profile_id", "i"), "profile_id"),
        exp.alias_(sql.col("ts", "e"), "ts"),
        exp.alias_(sql.col("event_type", "e"), "event_type"),
        exp.alias_(sql.col("session_id", "e"), "session_id"),
        exp.alias_(exp.cast(item, "VARCHAR"), "item"),
    ]
    for role in ("category", "basket", "name"):
        name = cols[role]
        value: exp.Expr = exp.cast(sql.col(name, "e"), "VARCHAR") if name else exp.Null()
        select.append(exp.alias_(value, role))
    price = cols["price"]
    select.append(
        exp.alias_(sql.try_cast(sql.col(price, "e"), "number") if price else exp.Null(), "price")
    )
    query = (
        exp.select(*select)
        .from_(exp.alias_(sql.table("events"), "e", table=True))
        .join(
            exp.alias_(sql.table("identities"), "i", table=True),
            on=exp.EQ(this=sql.col("id_key", "i"), expression=sql.col("id_key", "e")),
        )
    )
    types = mapping.event_types()
    conds: list[exp.Expr] = [
        exp.In(this=sql.col("event_type", "e"), expressions=[exp.Placeholder() for _ in types]),
        exp.Not(this=exp.Is(this=item, expression=exp.Null())),
    ]
    params += types
    if as_of is not None:
        conds.append(exp.LT(this=sql.col("ts", "e"), expression=exp.Placeholder()))
        params.append(as_of)
    if since is not None:
        conds.append(exp.GTE(this=sql.col("ts", "e"), expression=exp.Placeholder()))
        params.append(since)
    if profiles is not None:
        conds.append(sql.func("list_contains", exp.Placeholder(), sql.col("profile_id", "i")))
        params.append(list(profiles))
    if mapping.exclude_items:
        conds.append(
            exp.Not(
                this=sql.func("regexp_full_match", exp.cast(item, "VARCHAR"), exp.Placeholder())
            )
        )
        params.append(mapping.exclude_items)
    qty = cols["quantity"]
    if qty and mapping.purchase_types:
        # a purchase line with quantity <= 0 is a return / cancellation, not an interest signal
        is_purchase = exp.In(
            this=sql.col("event_type", "e"),
            expressions=[exp.Placeholder() for _ in mapping.purchase_types],
        )
        params += list(mapping.purchase_types)
        positive = exp.GT(this=sql.try_cast(sql.col(qty, "e"), "number"), expression=sql.lit(0))
        conds.append(
            exp.Or(
                this=exp.Not(this=exp.Paren(this=is_purchase)),
                expression=exp.Or(
                    this=positive,
                    expression=exp.Is(this=sql.col(qty, "e"), expression=exp.Null()),
                ),
            )
        )
    return query.where(exp.and_(*conds)).order_by(sql.col("ts", "e")), params


@dataclass
class Interactions:
    """Events of known profiles up to ``as_of`` with integer-coded profiles and items."""

    events: pd.DataFrame
    as_of: datetime
    mapping: EventMapping = field(default_factory=EventMapping)
    profiles: pd.Index = field(default_factory=lambda: pd.Index([], dtype=object))
    items: pd.Index = field(default_factory=lambda: pd.Index([], dtype=object))
    _labels: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        ev = self.events
        if len(self.profiles) == 0:
            self.profiles = pd.Index(pd.unique(ev["profile_id"]), dtype=object)
        if len(self.items) == 0:
            self.items = pd.Index(pd.unique(ev["item"]), dtype=object)
        m = self.mapping
        ev["u"] = self.profiles.get_indexer(ev["profile_id"])
        ev["i"] = self.items.get_indexer(ev["item"])
        ev["is_purchase"] = ev["event_type"].isin(m.purchase_types)
        ev["is_view"] = ev["event_type"].isin(m.view_types)
        ev["is_cart"] = ev["event_type"].isin(m.cart_types)
        ev["is_remove"] = ev["event_type"].isin(m.remove_types)
        ev["is_checkout"] = ev["event_type"].isin(m.checkout_types)

    @property
    def n_profiles(self) -> int:
        return len(self.profiles)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def age_days(self, ts: pd.Series) -> np.ndarray:
        """Days between each timestamp and ``as_of`` (>= 0)."""
        delta = (pd.Timestamp(self.as_of) - pd.to_datetime(ts)).dt.total_seconds()
        return np.maximum(delta.to_numpy(dtype=float), 0.0) / 86400.0

    def matrix(
        self,
        flag: str = "is_purchase",
        *,
        half_life_days: float | None = None,
        binary: bool = False,
        mask: pd.Series | None = None,
    ) -> sparse.csr_matrix:
        """Profiles x items matrix of events with ``flag`` (and ``mask``): counts,
        recency-weighted counts or 0/1."""
        keep = self.events[flag] if mask is None else self.events[flag] & mask
        ev = self.events[keep]
        weights = (
            np.ones(len(ev))
            if half_life_days is None
            else np.power(0.5, self.age_days(ev["ts"]) / half_life_days)
        )
        mat = sparse.csr_matrix(
            (weights, (ev["u"].to_numpy(), ev["i"].to_numpy())),
            shape=(self.n_profiles, self.n_items),
        )
        mat.sum_duplicates()
        if binary:
            mat.data[:] = 1.0
        return mat

    def baskets(self) -> sparse.csr_matrix:
        """Baskets x items 0/1 matrix of purchases (order id, else session, else profile-day)."""
        ev = self.events[self.events["is_purchase"]]
        day = pd.to_datetime(ev["ts"]).dt.strftime("%Y-%m-%d")
        key = ev["basket"].where(ev["basket"].notna(), ev["session_id"])
        key = key.where(key.notna(), ev["profile_id"].astype(str) + "@" + day)
        codes, _ = pd.factorize(key)
        mat = sparse.csr_matrix(
            (np.ones(len(ev)), (codes, ev["i"].to_numpy())),
            shape=(int(codes.max()) + 1 if len(codes) else 0, self.n_items),
        )
        mat.sum_duplicates()
        mat.data[:] = 1.0
        return mat

    def item_categories(self) -> pd.Series:
        """Category of each item (its most frequent non-null category), indexed by item code."""
        ev = self.events[self.events["category"].notna()]
        if ev.empty:
            return pd.Series(dtype=object)
        top = ev.groupby(["i", "category"]).size().reset_index(name="n")
        top = top.sort_values(["i", "n"], ascending=[True, False]).drop_duplicates("i")
        return top.set_index("i")["category"]

    def item_labels(self) -> np.ndarray:
        """Display label per item code: its latest name, else its id (computed once)."""
        cached = self._labels
        if cached is None:
            names = self.item_info()["name"].reindex(self.items)
            cached = np.where(names.notna(), names.astype(object), self.items.to_numpy())
            self._labels = cached
        return cached

    def item_info(self) -> pd.DataFrame:
        """Latest name, category and price per item id (for templates)."""
        cols = ["item", "name", "category", "price"]
        latest = self.events[cols].dropna(subset=["item"]).groupby("item").last()
        return latest


def load_interactions(
    store: Store,
    as_of: datetime,
    mapping: EventMapping | None = None,
    *,
    since: datetime | None = None,
    profiles: Sequence[str] | None = None,
    lookback: timedelta | None = None,
) -> Interactions:
    """Events of known profiles with ``since <= ts < as_of`` (strictly before ``as_of``)."""
    mapping = mapping or EventMapping()
    try:
        cols = resolve_columns(store, mapping)
    except ConfigError:
        # property columns appear with the first import: an empty store has nothing to learn
        if store.scalar("SELECT count(*) FROM events"):
            raise
        cols = None
    if lookback is not None:
        since = max(since, as_of - lookback) if since else as_of - lookback
    df = pd.DataFrame()
    if cols is not None:
        query, params = _event_query(cols, mapping, as_of, since, profiles)
        df = store.df(query, params)
    if df.empty:
        df = pd.DataFrame(
            {c: pd.Series(dtype=object) for c in (*BASE_COLUMNS, "item", "category", "basket")}
            | {"name": pd.Series(dtype=object), "price": pd.Series(dtype=float)}
        )
        df["ts"] = pd.to_datetime(df["ts"])
    return Interactions(df, as_of, mapping)
