"""A straightforward pandas implementation of the trait semantics.

It interprets the same TraitSet row by row with pandas group-bys. It is not used by the
engine: it is the independent reference the SQL compiler is checked against (tests) and
the baseline the benchmark compares speed with. Keep it obvious rather than fast.
"""

from __future__ import annotations

import re
from datetime import datetime

import numpy as np
import pandas as pd
from sqlglot import exp

from microseg.traits.compiler import LABEL_HIGH, LABEL_LOW, LABEL_MID
from microseg.traits.model import (
    AggregateTrait,
    AttributeTrait,
    Condition,
    CountTrait,
    DistinctCountTrait,
    EngagementTrait,
    Filtered,
    FirstLastTrait,
    InterestTagsTrait,
    ModeTrait,
    PreferredHourTrait,
    RecencyTrait,
    RfmTrait,
    TraitSet,
    parse_expression,
)


def _like_regex(pattern: str) -> str:
    out = []
    for ch in pattern:
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
    return "^" + "".join(out) + "$"


def _cond_mask(s: pd.Series, c: Condition) -> pd.Series:
    m = pd.Series(True, index=s.index)
    if c.eq is not None:
        m &= s == c.eq
    if c.ne is not None:
        m &= s.notna() & (s != c.ne)
    if c.in_ is not None:
        m &= s.isin(c.in_)
    if c.not_in is not None:
        m &= s.notna() & ~s.isin(c.not_in)
    for op, fn in (("gt", s.gt), ("gte", s.ge), ("lt", s.lt), ("lte", s.le)):
        value = getattr(c, op)
        if value is not None:
            m &= fn(value).fillna(False).astype(bool)
    if c.like is not None:
        m &= s.astype("string").str.match(_like_regex(c.like)).fillna(False).astype(bool)
    if c.matches is not None:
        m &= s.astype("string").str.contains(c.matches, regex=True).fillna(False).astype(bool)
    if c.exists is not None:
        m &= s.notna() if c.exists else s.isna()
    return m


class PandasTraits:
    """Compute a TraitSet over an events DataFrame already carrying ``profile_id``."""

    def __init__(
        self,
        traitset: TraitSet,
        as_of: datetime,
        events: pd.DataFrame,
        profiles: pd.Series,
        attributes: pd.DataFrame | None = None,
    ) -> None:
        self.ts = traitset
        self.as_of = as_of
        self.ev = events[events["ts"] <= pd.Timestamp(as_of)]
        self.profiles = pd.Index(profiles, name="profile_id")
        self.attributes = attributes
        self.as_of_epoch = (as_of - datetime(1970, 1, 1)).total_seconds()

    # -- helpers ------------------------------------------------------------------------
    def mask(self, f: Filtered, ev: pd.DataFrame | None = None) -> pd.Series:
        ev = self.ev if ev is None else ev
        m = pd.Series(True, index=ev.index)
        if f.events is not None:
            m &= ev["event_type"].isin(f.events)
        for prop, cond in f.where.items():
            m &= _cond_mask(ev[prop], cond)
        if f.window is not None:
            lower, upper, inclusive = f.window.bounds(self.as_of)
            if lower is not None:
                m &= (ev["ts"] >= lower) if inclusive else (ev["ts"] > lower)
            if upper is not None:
                m &= ev["ts"] < upper
        return m

    def value(self, text: str, ev: pd.DataFrame) -> pd.Series:
        numeric = {p: b for p, b in self.ts.properties.items() if b in ("integer", "number")}
        tree = parse_expression(text, numeric)

        def ev_(node: exp.Expression) -> pd.Series | float:
            if isinstance(node, exp.Paren):
                return ev_(node.this)
            if isinstance(node, exp.Neg):
                return -ev_(node.this)
            if isinstance(node, exp.Literal):
                return float(node.this)
            if isinstance(node, exp.Column):
                return ev[node.name].astype("float64")
            a, b = ev_(node.this), ev_(node.expression)
            if isinstance(node, exp.Add):
                return a + b
            if isinstance(node, exp.Sub):
                return a - b
            if isinstance(node, exp.Mul):
                return a * b
            return a / b

        out = ev_(tree)
        return out if isinstance(out, pd.Series) else pd.Series(out, index=ev.index)

    def days_since(self, last: pd.Series) -> pd.Series:
        secs = self.as_of_epoch - (last - pd.Timestamp(1970, 1, 1)).dt.total_seconds()
        return np.floor(secs / 86400).astype("Int64")

    def full(self, s: pd.Series, fill: object = None) -> pd.Series:
        out = s.reindex(self.profiles)
        return out.fillna(fill) if fill is not None else out

    # -- kinds ----------------------------------------------------------------------------
    def run(self) -> pd.DataFrame:
        cols: dict[str, pd.Series] = {}
        for t in self.ts:
            cols.update(self.trait(t))
        return pd.DataFrame(cols, index=self.profiles)

    def trait(self, t: object) -> dict[str, pd.Series]:
        ev = self.ev
        if isinstance(t, CountTrait):
            return {t.name: self.full(ev[self.mask(t)].groupby("profile_id").size(), 0)}
        if isinstance(t, AggregateTrait):
            sub = ev[self.mask(t)]
            v = self.value(t.value_text(), sub).dropna()
            g = v.groupby(sub.loc[v.index, "profile_id"])
            res = getattr(g, {"avg": "mean"}.get(t.kind, t.kind))()
            return {t.name: self.full(res, 0.0 if t.kind == "sum" else None)}
        if isinstance(t, DistinctCountTrait):
            sub = ev[self.mask(t)]
            return {t.name: self.full(sub.groupby("profile_id")[t.property].nunique(), 0)}
        if isinstance(t, FirstLastTrait):
            sub = ev[self.mask(t) & ev[t.property].notna()].sort_values(["ts", "event_id"])
            g = sub.groupby("profile_id")[t.property]
            return {t.name: self.full(g.first() if t.kind == "first" else g.last())}
        if isinstance(t, RecencyTrait):
            last = ev[self.mask(t)].groupby("profile_id")["ts"].max()
            return {t.name: self.full(self.days_since(last))}
        if isinstance(t, RfmTrait):
            return self.rfm(t)
        if isinstance(t, (ModeTrait, PreferredHourTrait)):
            return self.mode(t)
        if isinstance(t, EngagementTrait):
            return self.engagement(t)
        if isinstance(t, InterestTagsTrait):
            return self.tags(t)
        if isinstance(t, AttributeTrait):
            a = self.attributes
            if a is None or a.empty:
                return {t.name: self.full(pd.Series(dtype=object))}
            a = a[a["name"] == t.attribute].set_index("profile_id")
            if t.dtype == "number":
                v = a["value_num"].fillna(pd.to_numeric(a["value"], errors="coerce"))
            else:
                v = a["value"]
            return {t.name: self.full(v)}
        raise TypeError(t)

    @staticmethod
    def quintile(s: pd.Series, ascending: bool) -> pd.Series:
        pct = s.rank(method="max", pct=True, ascending=ascending)
        return np.ceil(5 * pct).astype("Int64")

    def rfm(self, t: RfmTrait) -> dict[str, pd.Series]:
        sub = self.ev[self.mask(t)]
        g = sub.groupby("profile_id")
        last = g["ts"].max()
        freq = g[t.frequency_of].nunique() if t.frequency_of else g.size()
        mon = self.value(t.monetary, sub).groupby(sub["profile_id"]).sum()
        has = freq[freq > 0].index
        rd = self.days_since(last)
        r = self.quintile(rd[has], ascending=False)
        f = self.quintile(freq[has], ascending=True)
        m = self.quintile(mon.reindex(has).fillna(0), ascending=True)
        labels = {}
        for pid in has:
            for seg in t.segments:
                if (
                    seg.r[0] <= r[pid] <= seg.r[1]
                    and seg.f[0] <= f[pid] <= seg.f[1]
                    and seg.m[0] <= m[pid] <= seg.m[1]
                ):
                    labels[pid] = seg.label
                    break
        n = t.name
        return {
            n: self.full(pd.Series(labels, dtype=object)),
            f"{n}_recency_days": self.full(rd),
            f"{n}_frequency": self.full(freq, 0),
            f"{n}_monetary": self.full(mon, 0.0),
            f"{n}_r": self.full(r),
            f"{n}_f": self.full(f),
            f"{n}_m": self.full(m),
        }

    def mode(self, t: ModeTrait | PreferredHourTrait) -> dict[str, pd.Series]:
        sub = self.ev[self.mask(t)]
        value = sub["ts"].dt.hour if isinstance(t, PreferredHourTrait) else sub[t.property]
        frame = pd.DataFrame({"profile_id": sub["profile_id"], "v": value})
        if isinstance(t, ModeTrait) and t.weight is not None:
            frame["w"] = self.value(t.weight, sub)
            grouped = frame.dropna(subset=["v"]).groupby(["profile_id", "v"])["w"].sum()
        else:
            grouped = frame.dropna(subset=["v"]).groupby(["profile_id", "v"]).size()
        g = (
            grouped.rename("w")
            .reset_index()
            .sort_values(["profile_id", "w", "v"], ascending=[True, False, True])
        )
        best = g.drop_duplicates("profile_id").set_index("profile_id")["v"]
        return {t.name: self.full(best)}

    def engagement(self, t: EngagementTrait) -> dict[str, pd.Series]:
        ev = self.ev
        sub = ev[self.mask(t) & ev["event_type"].isin(list(t.weights))]
        age = (self.as_of_epoch - (sub["ts"] - pd.Timestamp(1970, 1, 1)).dt.total_seconds()) / 86400
        contrib = sub["event_type"].map(t.weights).astype(float) * np.power(
            0.5, age / t.half_life_days
        )
        score = self.full(contrib.groupby(sub["profile_id"]).sum(), 0.0)
        lab = t.labels
        label = pd.Series(LABEL_LOW, index=score.index, dtype=object)
        pos = score > 0
        if lab.method == "thresholds":
            label[pos & (score >= lab.moderately_engaged)] = LABEL_MID
            label[pos & (score >= lab.highly_engaged)] = LABEL_HIGH
        else:
            cd = score[pos].rank(method="max", pct=True)
            label[cd[cd > lab.moderately_engaged].index] = LABEL_MID
            label[cd[cd > lab.highly_engaged].index] = LABEL_HIGH
        return {t.name: score, f"{t.name}_label": label}

    def tags(self, t: InterestTagsTrait) -> dict[str, pd.Series]:
        ev = self.ev
        base = self.mask(t)
        rows = []
        for tag in t.tags():
            m = pd.Series(False, index=ev.index)
            for rule in t.rules:
                if rule.tag == tag:
                    m |= self.mask(rule)
            n = ev[base & m].groupby("profile_id").size()
            n = n[n >= t.min_count]
            rows.append(pd.DataFrame({"profile_id": n.index, "tag": tag, "n": n.values}))
        allrows = pd.concat(rows) if rows else pd.DataFrame(columns=["profile_id", "tag", "n"])
        allrows = allrows.sort_values(["profile_id", "n", "tag"], ascending=[True, False, True])
        top = allrows.groupby("profile_id").head(t.cap)
        lists = top.groupby("profile_id")["tag"].agg(list)
        out = lists.reindex(self.profiles)
        out = out.apply(lambda v: v if isinstance(v, list) else [])
        return {t.name: out}


def pandas_traits(
    traitset: TraitSet,
    as_of: datetime,
    events: pd.DataFrame,
    identities: pd.DataFrame,
    profiles: pd.Series,
    attributes: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Reference trait table: events (with id_key) joined to identities, then pandas group-bys."""
    ev = events.merge(identities[["id_key", "profile_id"]], on="id_key", how="inner")
    out = PandasTraits(traitset, as_of, ev, profiles, attributes).run()
    return out.sort_index()


__all__ = ["PandasTraits", "pandas_traits"]
