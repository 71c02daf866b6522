"""BG/NBD and Gamma-Gamma against the published CDNOW figures (Fader, Hardie & Lee 2005)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from microseg.predict.clv import BetaGeoModel, GammaGammaModel, customer_lifetime_value, rfm_summary


@pytest.fixture(scope="module")
def cdnow_summary(data_dir: Path) -> pd.DataFrame:
    path = data_dir / "cdnow" / "CDNOW_sample.txt"
    if not path.exists():
        pytest.skip(f"CDNOW sample not found at {path}")
    raw = pd.read_csv(
        path,
        sep=r"\s+",
        header=None,
        names=["master_id", "profile_id", "date", "number_of_cds", "value"],
        dtype={"date": str},
    )
    events = raw.assign(ts=pd.to_datetime(raw["date"], format="%Y%m%d"))
    # 39-week calibration period 1997-01-01 .. 1997-09-30 (as_of is exclusive).
    return rfm_summary(events, as_of="1997-10-01", freq="W")


def test_summary_matches_the_published_calibration_set(cdnow_summary: pd.DataFrame) -> None:
    assert len(cdnow_summary) == 2357
    assert int((cdnow_summary["frequency"] > 0).sum()) == 946
    assert int(cdnow_summary["frequency"].sum()) == 2457  # total repeat purchases in FHL (2005)


def test_bgnbd_reproduces_fader_hardie_lee(cdnow_summary: pd.DataFrame) -> None:
    s = cdnow_summary
    model = BetaGeoModel().fit(s["frequency"], s["recency"], s["T"])
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    for name, value in published.items():
        assert model.params_[name] == pytest.approx(value, rel=1e-2), name
    assert model.log_likelihood_ == pytest.approx(-9582.4, rel=1e-4)
    # FHL 2005: a customer with x=2, t_x=30.43, T=38.86 expects 1.226 purchases in the next 39 weeks.
    expected = model.conditional_expected_purchases(
        39, np.array([2]), np.array([30.43]), np.array([38.86])
    )
    assert expected[0] == pytest.approx(1.226, rel=1e-2)


def test_gamma_gamma_reproduces_published_parameters(cdnow_summary: pd.DataFrame) -> None:
    s = cdnow_summary
    model = GammaGammaModel().fit(s["frequency"], s["monetary_value"])
    assert model.n_profiles_ == 946
    for name, value in {"p": 6.25, "q": 3.74, "v": 15.44}.items():
        assert model.params_[name] == pytest.approx(value, rel=1e-2), name
    # The conditional mean shrinks a profile's own average towards the population mean.
    pop_mean = model.params_["p"] * model.params_["v"] / (model.params_["q"] - 1)
    cond = model.conditional_expected_average_value(np.array([1, 20]), np.array([100.0, 100.0]))
    assert pop_mean < cond[0] < cond[1] < 100.0


def test_clv_table_is_consistent(cdnow_summary: pd.DataFrame) -> None:
    s = cdnow_summary
    bg = BetaGeoModel().fit(s["frequency"], s["recency"], s["T"])
    gg = GammaGammaModel().fit(s["frequency"], s["monetary_value"])
    out = customer_lifetime_value(bg, gg, s, horizon=12, discount_rate=0.01)
    assert list(out.columns) == [
        "predicted_purchases",
        "expected_average_value",
        "probability_alive",
        "clv",
    ]
    assert out.index.equals(s.index)
    assert (out["clv"] >= 0).all() and out["probability_alive"].between(0, 1).all()
    undiscounted = customer_lifetime_value(bg, gg, s, horizon=12, discount_rate=0.0)
    assert (out["clv"] <= undiscounted["clv"] + 1e-9).all()
    assert undiscounted["clv"].to_numpy() == pytest.approx(
        (undiscounted["predicted_purchases"] * undiscounted["expected_average_value"]).to_numpy(),
        rel=1e-9,
    )
    # Frequent recent buyers are worth more than one-off buyers.
    frequent = out[s["frequency"] >= 5]["clv"].mean()
    one_off = out[s["frequency"] == 0]["clv"].mean()
    assert frequent > 5 * one_off


def test_rfm_summary_is_point_in_time() -> None:
    events = pd.DataFrame(
        {
            "profile_id": ["a", "a", "a", "a", "b"],
            "ts": pd.to_datetime(
                [
                    "2024-01-01 09:00",
                    "2024-01-01 18:00",
                    "2024-01-15 00:00",
                    "2024-03-01 00:00",
                    "2024-01-08 00:00",
                ]
            ),
            "value": [10.0, 5.0, 20.0, 999.0, 7.0],
        }
    )
    s = rfm_summary(events, as_of="2024-01-29", freq="W")
    assert (
        s.loc["a", "frequency"] == 1
    )  # same-day orders are one purchase day; March is in the future
    assert s.loc["a", "recency"] == pytest.approx(2.0)
    assert s.loc["a", "T"] == pytest.approx(27 / 7)
    assert s.loc["a", "monetary_value"] == pytest.approx(20.0)
    assert s.loc["b", "frequency"] == 0 and s.loc["b", "monetary_value"] == 0


def test_bad_inputs_raise_value_errors() -> None:
    with pytest.raises(ValueError, match="missing columns"):
        rfm_summary(pd.DataFrame({"profile_id": [1]}), as_of="2024-01-01")
    with pytest.raises(ValueError, match="recency"):
        BetaGeoModel().fit([1, 0], [5.0, 0.0], [4.0, 3.0])
    with pytest.raises(ValueError, match="not fitted"):
        BetaGeoModel().probability_alive([1], [1], [2])
    with pytest.raises(ValueError, match="repeat customers"):
        GammaGammaModel().fit([0, 0, 1], [0, 0, 5.0])
