"""Attribution on a hand-worked journey set; Markov removal effects vs Monte Carlo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from microseg.errors import MicrosegError
from microseg.measure.attribution import (
    attribute,
    build_journeys,
    compare_models,
    conversion_probability,
    fit_markov,
    plot_attribution,
    removal_effects,
    simulate_conversion,
)

# Journeys worked by hand:
#   j1: A (day 0) -> B (day 7, converts, value 30)
#   j2: A (day 0) -> no conversion
#   j3: B (day 3, converts, value 10) -> A (day 4, after conversion: ignored)
TOUCHES = pd.DataFrame(
    {
        "journey_id": ["j1", "j1", "j2", "j3", "j3"],
        "ts": pd.to_datetime(
            ["2024-01-01", "2024-01-08", "2024-01-01", "2024-01-04", "2024-01-05"]
        ),
        "channel": ["A", "B", "A", "B", "A"],
        "converted": [False, True, False, True, False],
        "value": [0.0, 30.0, 0.0, 10.0, 0.0],
    }
)

# (model, credit A, credit B) in conversions
HAND = [
    ("first", 1.0, 1.0),
    ("last", 0.0, 2.0),
    ("linear", 0.5, 1.5),
    ("position", 0.5, 1.5),  # two touches: 50/50
    ("time_decay", 1 / 3, 5 / 3),  # half-life 7 days: A is 7 days old -> weight 1/2 vs 1
    # Markov: P(conv)=2/3; without A 1/3 (RE 1/2); without B 0 (RE 1); shares 1/3, 2/3
    ("markov", 2 / 3, 4 / 3),
]


@pytest.mark.parametrize(("model", "a", "b"), HAND)
def test_models_match_hand_worked_credit(model: str, a: float, b: float) -> None:
    out = attribute(TOUCHES, model, value_col="value").set_index("channel")
    assert out.loc["A", "conversions"] == pytest.approx(a)
    assert out.loc["B", "conversions"] == pytest.approx(b)
    assert out["conversions"].sum() == pytest.approx(2.0)
    assert out["value"].sum() == pytest.approx(40.0)
    assert out["share"].sum() == pytest.approx(1.0)


def test_time_decay_value_and_markov_removal_effects() -> None:
    td = attribute(TOUCHES, "time_decay", value_col="value").set_index("channel")
    assert td.loc["A", "value"] == pytest.approx(10.0)  # 1/3 of j1's 30
    mk = attribute(TOUCHES, "markov").set_index("channel")
    assert mk.loc["A", "removal_effect"] == pytest.approx(0.5)
    assert mk.loc["B", "removal_effect"] == pytest.approx(1.0)
    chain = fit_markov(build_journeys(TOUCHES))
    assert conversion_probability(chain) == pytest.approx(2 / 3)


def _random_touches(seed: int = 0, n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    channels = np.array(["search", "social", "email", "display"])
    rows = []
    for j in range(n):
        k = rng.integers(1, 6)
        chans = rng.choice(channels, size=k, p=[0.35, 0.3, 0.2, 0.15])
        p_conv = 0.05 + 0.25 * ("email" in chans) + 0.1 * ("search" in chans)
        conv = rng.random() < p_conv
        for i, c in enumerate(chans):
            rows.append(
                (
                    f"j{j}",
                    pd.Timestamp("2024-01-01") + pd.Timedelta(hours=int(i * 5)),
                    c,
                    bool(conv and i == k - 1),
                    20.0 if conv and i == k - 1 else 0.0,
                )
            )
    return pd.DataFrame(rows, columns=["journey_id", "ts", "channel", "converted", "value"])


def test_exact_markov_matches_monte_carlo() -> None:
    chain = fit_markov(build_journeys(_random_touches()))
    # self-loops and cycles (e.g. email -> search -> email) make this a real absorbing chain
    assert np.trace(chain.matrix[1:-2, 1:-2]) > 0
    for removed in (None, *chain.channels):
        exact = conversion_probability(chain, removed)
        mc = simulate_conversion(chain, removed, n_paths=60_000, random_state=1)
        se = np.sqrt(exact * (1 - exact) / 60_000)
        assert abs(mc - exact) < 4 * se + 1e-9, (removed, exact, mc)
    eff = removal_effects(chain)
    assert all(0 <= e <= 1 for e in eff.values())
    # email lifts conversion by 25 pp, display is rarer and does nothing
    assert eff["email"] > eff["display"]


def test_observed_conversion_rate_equals_chain_probability() -> None:
    touches = _random_touches(3)
    journeys = build_journeys(touches)
    observed = np.mean([j.converted for j in journeys])
    assert conversion_probability(fit_markov(journeys)) == pytest.approx(observed, abs=0.03)


def test_compare_and_plot(tmp_path: Path) -> None:
    table = compare_models(_random_touches(), value_col="value")
    assert set(table["model"]) == {"first", "last", "linear", "time_decay", "position", "markov"}
    sums = table.groupby("model")["conversions"].sum()
    assert np.allclose(sums.to_numpy(), sums.iloc[0])
    out = tmp_path / "attr.png"
    plot_attribution(table).savefig(out)
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 2000


def test_errors_are_clear() -> None:
    with pytest.raises(MicrosegError, match="did you mean 'markov'"):
        attribute(TOUCHES, "markow")
    with pytest.raises(MicrosegError, match=r"lack column 'channel' \(did you mean 'chanel'"):
        attribute(TOUCHES.rename(columns={"channel": "chanel"}), "linear")
    no_conv = TOUCHES.assign(converted=False)
    out = attribute(no_conv, "markov")
    assert (out["conversions"] == 0).all()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["no", "yes", "no", "yes", "no"], 2.0),
        (["false", "TRUE", "", "true", None], 2.0),
        ([0, 1, 0, 1, 0], 2.0),
        ([0.0, 1.0, None, 0.0, 0.0], 1.0),
    ],
)
def test_converted_flag_forms(flags: list[object], expected: float) -> None:
    out = attribute(TOUCHES.assign(converted=flags), "last")
    assert out["conversions"].sum() == pytest.approx(expected)


def test_bad_converted_flag_is_an_error() -> None:
    with pytest.raises(MicrosegError, match="converted flag"):
        attribute(TOUCHES.assign(converted=["maybe", "no", "no", "no", "no"]), "last")
