"""Prediction benchmarks: real-data propensity AUCs, CDNOW CLV, 1 M-profile scoring speed.

Run: python benchmarks/bench_predict.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from microseg.predict import (
    BetaGeoModel,
    GammaGammaModel,
    OnlinePropensity,
    PropensityModel,
    customer_lifetime_value,
    evaluate,
    explain,
    rfm_summary,
    temporal_split,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ALGOS = ("logistic", "random_forest", "lightgbm")


def shoppers() -> None:
    raw = pd.read_csv(DATA / "online_shoppers_intention" / "online_shoppers_intention.csv")
    y = raw.pop("Revenue").astype(int)
    raw["Weekend"] = raw["Weekend"].astype(int)
    raw["returning"] = (raw.pop("VisitorType") == "Returning_Visitor").astype(int)
    months = ["Jan", "Feb", "Mar", "Apr", "May", "June", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    raw["month"] = raw.pop("Month").map({m: i + 1 for i, m in enumerate(months)})
    X_tr, X_te, y_tr, y_te = train_test_split(raw, y, test_size=0.25, stratify=y, random_state=0)
    for algo in ALGOS:
        for balance in ("none", "smote"):
            m = PropensityModel(algorithm=algo, balance=balance, n_estimators=300).fit(X_tr, y_tr)
            ev = evaluate(y_te, m.predict_proba(X_te)[:, 1])
            print(
                f"[shoppers] {algo:13s} balance={balance:5s}: ROC-AUC {ev.roc_auc:.4f}, PR-AUC {ev.pr_auc:.4f}, "
                f"P/R@0.5 {ev.precision:.3f}/{ev.recall:.3f}, top10% precision {ev.top_precision:.3f} "
                f"lift {ev.lift_at_top:.2f} (n_test={ev.n}, positives={ev.positives})"
            )
    m = PropensityModel(algorithm="lightgbm", n_estimators=300).fit(X_tr, y_tr)
    ex = explain(m, X_te, max_rows=1000)
    print(
        "[shoppers] SHAP top features:",
        ", ".join(f"{k}={v:.3f}" for k, v in ex.global_importance.head(5).items()),
    )


def retail_events() -> pd.DataFrame:
    raw = pd.read_csv(
        DATA / "online_retail_uci" / "online_retail.csv.gz",
        dtype={"InvoiceNo": str, "StockCode": str, "CustomerID": "Int64"},
    )
    raw = raw.dropna(subset=["CustomerID"])
    raw = raw[
        ~raw["InvoiceNo"].str.startswith("C") & (raw["Quantity"] > 0) & (raw["UnitPrice"] > 0)
    ]
    return pd.DataFrame(
        {
            "profile_id": raw["CustomerID"].astype(str),
            "ts": pd.to_datetime(raw["InvoiceDate"]),
            "value": raw["Quantity"] * raw["UnitPrice"],
        }
    )


def retail(events: pd.DataFrame) -> None:
    for target in ("second_purchase", "purchase"):
        split = temporal_split(
            events,
            train_as_of=[f"2011-{m:02d}-01" for m in range(3, 10)],
            valid_as_of="2011-10-01",
            test_as_of="2011-11-01",
            target=target,
            horizon_days=30,
        )
        print(
            f"[retail {target}] train {len(split.X_train):,} rows ({int(split.y_train.sum()):,} pos) from "
            f"{len(split.train_as_of)} snapshots; valid {len(split.X_valid):,} ({int(split.y_valid.sum())} pos); "
            f"test {len(split.X_test):,} ({int(split.y_test.sum())} pos)"
        )
        for algo in ALGOS:
            m = PropensityModel(algorithm=algo, n_estimators=200, on_insufficient="warn").fit(
                split.X_train, split.y_train
            )
            va = evaluate(split.y_valid, m.predict_proba(split.X_valid)[:, 1])
            te = evaluate(split.y_test, m.predict_proba(split.X_test)[:, 1])
            print(
                f"[retail {target}] {algo:13s}: valid ROC-AUC {va.roc_auc:.4f}; test ROC-AUC {te.roc_auc:.4f}, "
                f"PR-AUC {te.pr_auc:.4f} (base {te.positives / te.n:.3f}), top10% lift {te.lift_at_top:.2f}"
            )
    # Online learning: the same training snapshots streamed month by month.
    split = temporal_split(
        events,
        train_as_of=[f"2011-{m:02d}-01" for m in range(3, 10)],
        valid_as_of="2011-10-01",
        test_as_of="2011-11-01",
    )
    online = OnlinePropensity()
    for day in split.train_as_of:
        online.partial_fit(
            split.X_train.xs(day, level="as_of"), split.y_train.xs(day, level="as_of")
        )
    te = evaluate(split.y_test, online.predict_proba(split.X_test)[:, 1])
    print(
        f"[retail purchase] online SGD (7 monthly partial_fit batches): test ROC-AUC {te.roc_auc:.4f}"
    )


def cdnow() -> None:
    raw = pd.read_csv(
        DATA / "cdnow" / "CDNOW_sample.txt",
        sep=r"\s+",
        header=None,
        names=["m", "profile_id", "date", "n", "value"],
        dtype={"date": str},
    )
    events = raw.assign(ts=pd.to_datetime(raw["date"], format="%Y%m%d"))
    s = rfm_summary(events, as_of="1997-10-01", freq="W")
    t0 = time.perf_counter()
    bg = BetaGeoModel().fit(s["frequency"], s["recency"], s["T"])
    gg = GammaGammaModel().fit(s["frequency"], s["monetary_value"])
    fit_s = time.perf_counter() - t0
    print(
        f"[cdnow] BG/NBD {', '.join(f'{k}={v:.4f}' for k, v in bg.params_.items())}, LL={bg.log_likelihood_:.2f} (published 0.243/4.414/0.793/2.426, LL -9582.4)"
    )
    print(
        f"[cdnow] Gamma-Gamma {', '.join(f'{k}={v:.4f}' for k, v in gg.params_.items())} on {gg.n_profiles_} repeat customers (published 6.25/3.74/15.44); fit {fit_s:.2f} s"
    )
    # Holdout check: predicted vs actual repeat purchases in weeks 40-78.
    holdout = events[(events["ts"] >= "1997-10-01") & (events["ts"] < "1998-07-01")]
    actual = (
        holdout.assign(day=holdout["ts"].dt.normalize())
        .groupby("profile_id")["day"]
        .nunique()
        .reindex(s.index, fill_value=0)
    )
    pred = bg.conditional_expected_purchases(39, s["frequency"], s["recency"], s["T"])
    print(
        f"[cdnow] holdout 39 weeks: predicted {pred.sum():.0f} repeat purchase days vs actual {actual.sum()}; MAE/profile {np.mean(np.abs(pred - actual)):.3f}"
    )
    clv = customer_lifetime_value(bg, gg, s)
    print(
        f"[cdnow] 12-month CLV: total ${clv['clv'].sum():,.0f}, mean ${clv['clv'].mean():.2f}, top decile holds {clv['clv'].nlargest(len(clv) // 10).sum() / clv['clv'].sum():.1%}"
    )


def scoring_speed(rows: int) -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(rows, 16)), columns=[f"f{i}" for i in range(16)])
    y = (X["f0"] + X["f1"] * X["f2"] + rng.normal(size=rows) > 1).astype(int)
    train = X.iloc[:50_000]
    for algo in ALGOS:
        m = PropensityModel(algorithm=algo, n_estimators=200).fit(train, y.iloc[:50_000])
        t0 = time.perf_counter()
        scores = m.score_profiles(X)
        print(
            f"[speed] scoring {rows:,} profiles x 16 features with {algo} (200 trees): {time.perf_counter() - t0:.2f} s (mean {scores.mean():.3f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    cdnow()
    shoppers()
    retail(retail_events())
    scoring_speed(args.rows)


if __name__ == "__main__":
    main()
