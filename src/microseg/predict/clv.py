"""Customer lifetime value: BG/NBD (purchase counts) and Gamma-Gamma (spend per purchase).

Both models are fitted by maximum likelihood with ``scipy.optimize`` on the published
log-likelihoods:

* BG/NBD — Fader, Hardie & Lee (2005), "Counting your customers the easy way", eq. (6)
  and the conditional expectation of eq. (10).
* Gamma-Gamma — Fader, Hardie & Lee (2005), "RFM and CLV: using iso-value curves",
  and Fader & Hardie's note "The Gamma-Gamma model of monetary value" (2013).

Inputs are a per-profile summary (frequency = repeat purchase days, recency = time from
first to last purchase, T = time from first purchase to the end of calibration, monetary
= mean value of the repeat purchases), built point-in-time by :func:`rfm_summary`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, special

__all__ = [
    "BetaGeoModel",
    "GammaGammaModel",
    "customer_lifetime_value",
    "rank_segments_by_value",
    "rfm_summary",
]

_FREQS = {"D": 1.0, "W": 7.0, "M": 30.4375}


def rfm_summary(
    events: pd.DataFrame,
    *,
    as_of: str | pd.Timestamp,
    start: str | pd.Timestamp | None = None,
    freq: str = "W",
) -> pd.DataFrame:
    """Per-profile BTYD summary from ``events`` (columns profile_id, ts, value) up to ``as_of``.

    Purchases are aggregated per calendar day (several orders the same day count once, as in
    the literature). Events at or after ``as_of`` are ignored, so the summary is point-in-time.
    ``start`` (when given) drops earlier events. T runs from the first purchase day to the last
    observable day (the day before ``as_of``). Returns columns frequency, recency, T, monetary_value (mean of repeat
    purchase days; 0 when there are none), first_ts, last_ts; index profile_id.
    """
    missing = {"profile_id", "ts", "value"} - set(events.columns)
    if missing:
        raise ValueError(f"events is missing columns {sorted(missing)}; has {list(events.columns)}")
    if freq not in _FREQS:
        raise ValueError(f"freq must be one of {sorted(_FREQS)}, got {freq!r}")
    cutoff = pd.Timestamp(as_of)
    ts = pd.to_datetime(events["ts"])
    keep = ts < cutoff
    if start is not None:
        keep &= ts >= pd.Timestamp(start)
    frame = pd.DataFrame(
        {
            "profile_id": events.loc[keep, "profile_id"].to_numpy(),
            "day": ts[keep].dt.normalize().to_numpy(),
            "value": pd.to_numeric(events.loc[keep, "value"]).to_numpy(dtype=float),
        }
    )
    daily = frame.groupby(["profile_id", "day"], sort=True)["value"].sum().reset_index()
    grouped = daily.groupby("profile_id", sort=True)
    first = grouped["day"].min()
    last = grouped["day"].max()
    count = grouped["day"].count()
    total = grouped["value"].sum()
    first_value = daily.drop_duplicates("profile_id", keep="first").set_index("profile_id")["value"]
    unit = pd.Timedelta(days=_FREQS[freq])
    # The last observable day is the day before as_of (as_of is exclusive); T runs from the first
    # purchase day to it, like recency runs to the last purchase day (Fader-Hardie convention).
    end_day = (cutoff - pd.Timedelta(1, "ns")).normalize()
    frequency = (count - 1).astype(float)
    repeat_total = total - first_value
    monetary = np.where(frequency > 0, repeat_total / frequency.where(frequency > 0, 1.0), 0.0)
    out = pd.DataFrame(
        {
            "frequency": frequency,
            "recency": (last - first) / unit,
            "T": (end_day - first) / unit,
            "monetary_value": monetary,
            "first_ts": first,
            "last_ts": last,
        }
    )
    out.index.name = "profile_id"
    return out


def _check_summary(x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray) -> None:
    if np.any(x < 0) or np.any(t_x < 0) or np.any(t_x > big_t + 1e-9):
        raise ValueError(
            "need frequency >= 0 and 0 <= recency <= T; got "
            f"min frequency {x.min()}, min recency {t_x.min()}, max recency-T {np.max(t_x - big_t)}"
        )
    if np.any((x == 0) & (t_x > 0)):
        raise ValueError("recency must be 0 when frequency is 0")


@dataclass(frozen=True)
class _Fit:
    params: np.ndarray
    log_likelihood: float
    converged: bool


class BetaGeoModel:
    """BG/NBD model of repeat purchasing (Fader, Hardie & Lee 2005).

    Parameters
    ----------
    penalizer : float
        L2 penalty on the log-parameters (0 reproduces the published MLE).
    random_state : int | None
        Seed for the jittered restarts used when the first optimisation fails.
    """

    def __init__(self, *, penalizer: float = 0.0, random_state: int | None = 0) -> None:
        self.penalizer = penalizer
        self.random_state = random_state

    @staticmethod
    def _loglik(
        params: np.ndarray, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray
    ) -> np.ndarray:
        r, alpha, a, b = params
        a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
        a2 = (
            special.gammaln(a + b)
            + special.gammaln(b + x)
            - special.gammaln(b)
            - special.gammaln(a + b + x)
        )
        a3 = -(r + x) * np.log(alpha + big_t)
        with np.errstate(divide="ignore", invalid="ignore"):
            a4 = np.where(
                x > 0,
                np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x),
                -np.inf,
            )
        return np.asarray(a1 + a2 + np.logaddexp(a3, a4))

    def fit(
        self,
        frequency: np.ndarray | pd.Series,
        recency: np.ndarray | pd.Series,
        T: np.ndarray | pd.Series,
    ) -> BetaGeoModel:
        """Fit r, alpha, a, b by maximum likelihood; returns self."""
        x = np.asarray(frequency, dtype=float)
        t_x = np.asarray(recency, dtype=float)
        big_t = np.asarray(T, dtype=float)
        if not (len(x) == len(t_x) == len(big_t)) or len(x) < 2:
            raise ValueError(
                f"need equal-length arrays of >= 2 profiles, got {len(x)}, {len(t_x)}, {len(big_t)}"
            )
        _check_summary(x, t_x, big_t)
        # Aggregate identical (x, t_x, T) rows: the likelihood only depends on them.
        keys = np.stack([x, t_x, big_t], axis=1)
        uniq, counts = np.unique(keys, axis=0, return_counts=True)
        ux, utx, ut = uniq[:, 0], uniq[:, 1], uniq[:, 2]
        n = counts.sum()

        def objective(log_params: np.ndarray) -> float:
            params = np.exp(log_params)
            ll = float(np.sum(counts * self._loglik(params, ux, utx, ut)))
            return -ll / n + self.penalizer * float(np.sum(params**2))

        rng = np.random.default_rng(self.random_state)
        best: _Fit | None = None
        start = np.log(np.array([1.0, max(float(np.mean(big_t)), 1e-3), 1.0, 1.0]))
        for attempt in range(4):
            x0 = start if attempt == 0 else start + rng.normal(0, 0.5, size=4)
            res = optimize.minimize(objective, x0, method="L-BFGS-B")
            if not np.isfinite(res.fun):
                continue
            fit = _Fit(np.exp(res.x), -float(res.fun) * n, bool(res.success))
            if best is None or fit.log_likelihood > best.log_likelihood:
                best = fit
            if res.success:
                break
        if best is None:
            raise ValueError(
                "BG/NBD optimisation failed: the likelihood is not finite for this data"
            )
        self.params_ = dict(
            zip(("r", "alpha", "a", "b"), (float(v) for v in best.params), strict=True)
        )
        self.log_likelihood_ = best.log_likelihood
        self.converged_ = best.converged
        self.n_profiles_ = int(n)
        return self

    def _p(self) -> tuple[float, float, float, float]:
        if not hasattr(self, "params_"):
            raise ValueError("BetaGeoModel is not fitted; call fit() first")
        p = self.params_
        return p["r"], p["alpha"], p["a"], p["b"]

    def conditional_expected_purchases(
        self,
        t: float,
        frequency: np.ndarray | pd.Series,
        recency: np.ndarray | pd.Series,
        T: np.ndarray | pd.Series,
    ) -> np.ndarray:
        """Expected purchases in the next ``t`` periods given each profile's history (FHL eq. 10)."""
        r, alpha, a, b = self._p()
        x = np.asarray(frequency, dtype=float)
        t_x = np.asarray(recency, dtype=float)
        big_t = np.asarray(T, dtype=float)
        hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + big_t + t))
        first = (a + b + x - 1) / (a - 1)
        second = 1 - ((alpha + big_t) / (alpha + big_t + t)) ** (r + x) * hyp
        denom = 1 + (x > 0) * (a / np.maximum(b + x - 1, 1e-12)) * (
            (alpha + big_t) / (alpha + t_x)
        ) ** (r + x)
        return np.asarray(first * second / denom)

    def probability_alive(
        self,
        frequency: np.ndarray | pd.Series,
        recency: np.ndarray | pd.Series,
        T: np.ndarray | pd.Series,
    ) -> np.ndarray:
        """P(still active) for each profile."""
        r, alpha, a, b = self._p()
        x = np.asarray(frequency, dtype=float)
        t_x = np.asarray(recency, dtype=float)
        big_t = np.asarray(T, dtype=float)
        odds = (
            (x > 0)
            * (a / np.maximum(b + x - 1, 1e-12))
            * ((alpha + big_t) / (alpha + t_x)) ** (r + x)
        )
        return np.asarray(1.0 / (1.0 + odds))

    def expected_purchases(self, t: float | np.ndarray) -> np.ndarray:
        """Unconditional expected purchases of a new customer in (0, t] (FHL eq. 9)."""
        r, alpha, a, b = self._p()
        t_arr = np.asarray(t, dtype=float)
        hyp = special.hyp2f1(r, b, a + b - 1, t_arr / (alpha + t_arr))
        return np.asarray((a + b - 1) / (a - 1) * (1 - (alpha / (alpha + t_arr)) ** r * hyp))


class GammaGammaModel:
    """Gamma-Gamma model of spend per transaction (Fader, Hardie & Lee 2005).

    Fit on profiles with at least one repeat purchase (frequency > 0) and positive monetary value.
    """

    def __init__(self, *, penalizer: float = 0.0) -> None:
        self.penalizer = penalizer

    def fit(
        self, frequency: np.ndarray | pd.Series, monetary_value: np.ndarray | pd.Series
    ) -> GammaGammaModel:
        """Fit p, q, v by maximum likelihood; returns self."""
        x = np.asarray(frequency, dtype=float)
        m = np.asarray(monetary_value, dtype=float)
        keep = (x > 0) & (m > 0)
        if keep.sum() < 2:
            raise ValueError(
                f"Gamma-Gamma needs >= 2 repeat customers with positive spend, got {int(keep.sum())}"
            )
        x, m = x[keep], m[keep]
        n = len(x)

        def objective(log_params: np.ndarray) -> float:
            p, q, v = np.exp(log_params)
            ll = (
                special.gammaln(p * x + q)
                - special.gammaln(p * x)
                - special.gammaln(q)
                + q * np.log(v)
                + (p * x - 1) * np.log(m)
                + p * x * np.log(x)
                - (p * x + q) * np.log(x * m + v)
            )
            return -float(np.sum(ll)) / n + self.penalizer * float(np.sum(np.exp(log_params) ** 2))

        res = optimize.minimize(objective, np.log([1.0, 1.0, float(np.mean(m))]), method="L-BFGS-B")
        if not np.isfinite(res.fun):
            raise ValueError(
                "Gamma-Gamma optimisation failed: the likelihood is not finite for this data"
            )
        self.params_ = dict(zip(("p", "q", "v"), (float(v) for v in np.exp(res.x)), strict=True))
        self.log_likelihood_ = -float(res.fun) * n
        self.converged_ = bool(res.success)
        self.n_profiles_ = n
        return self

    def conditional_expected_average_value(
        self, frequency: np.ndarray | pd.Series, monetary_value: np.ndarray | pd.Series
    ) -> np.ndarray:
        """E[spend per transaction | history]; the population mean for profiles with no repeats."""
        if not hasattr(self, "params_"):
            raise ValueError("GammaGammaModel is not fitted; call fit() first")
        p, q, v = self.params_["p"], self.params_["q"], self.params_["v"]
        x = np.asarray(frequency, dtype=float)
        m = np.asarray(monetary_value, dtype=float)
        m = np.where(x > 0, m, 0.0)
        return np.asarray((p * (v + x * m)) / (p * x + q - 1))


def customer_lifetime_value(
    bgnbd: BetaGeoModel,
    gamma_gamma: GammaGammaModel,
    summary: pd.DataFrame,
    *,
    horizon: int = 12,
    period_length: float = 4.348,
    discount_rate: float = 0.01,
) -> pd.DataFrame:
    """Predicted purchases, average value and discounted CLV per profile.

    ``horizon`` periods (default 12 months) of ``period_length`` summary time units each
    (4.348 weeks per month when the summary is in weeks); each period's expected purchases
    times the expected spend is discounted by ``(1 + discount_rate) ** period``.
    """
    if horizon < 1 or period_length <= 0 or discount_rate < 0:
        raise ValueError(
            f"bad horizon={horizon}, period_length={period_length}, discount_rate={discount_rate}"
        )
    x, t_x, big_t = summary["frequency"], summary["recency"], summary["T"]
    value = gamma_gamma.conditional_expected_average_value(x, summary["monetary_value"])
    clv = np.zeros(len(summary))
    previous = np.zeros(len(summary))
    for period in range(1, horizon + 1):
        cumulative = bgnbd.conditional_expected_purchases(period * period_length, x, t_x, big_t)
        clv += (cumulative - previous) * value / (1 + discount_rate) ** period
        previous = cumulative
    return pd.DataFrame(
        {
            "predicted_purchases": previous,
            "expected_average_value": value,
            "probability_alive": bgnbd.probability_alive(x, t_x, big_t),
            "clv": clv,
        },
        index=summary.index,
    )


def rank_segments_by_value(values: pd.Series, membership: pd.Series) -> pd.DataFrame:
    """Rank segments by predicted value.

    ``values`` is a per-profile value (e.g. CLV) indexed by profile_id; ``membership`` maps
    profile_id to a segment name (one segment per profile; repeat the call per segment
    family). Profiles without a value count as 0. Returns size, total, mean and share of
    total value per segment, highest total first.
    """
    if membership.index.has_duplicates:
        raise ValueError("membership must have one segment per profile_id")
    aligned = values.reindex(membership.index).fillna(0.0).astype(float)
    frame = pd.DataFrame({"segment": membership.to_numpy(), "value": aligned.to_numpy()})
    table = frame.groupby("segment")["value"].agg(size="size", total_value="sum", mean_value="mean")
    grand = float(table["total_value"].sum())
    table["share_of_value"] = table["total_value"] / grand if grand else 0.0
    return table.sort_values("total_value", ascending=False)
