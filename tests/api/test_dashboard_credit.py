"""The dashboard's vectorised channel credit equals measure.attribution.attribute exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from microseg.api.dashboard.credit import credit_by_model
from microseg.errors import MicrosegError
from microseg.measure.attribution import MODELS, attribute


def random_touchpoints(seed: int, n: int = 2500, journeys: int = 400) -> pd.DataFrame:
    """Random journeys with timestamp ties, several conversions per journey, singletons."""
    rng = np.random.default_rng(seed)
    seconds = rng.integers(0, 600, n) * 600  # coarse: many equal timestamps
    return pd.DataFrame(
        {
            "journey_id": rng.integers(0, journeys, n).astype(str),
            "ts": pd.Timestamp("2024-03-01") + pd.to_timedelta(seconds, unit="s"),
            "channel": rng.choice(["email", "search", "social", "direct", "ads"], n),
            "converted": rng.random(n) < 0.12,
            "value": np.round(rng.random(n) * 100, 2),
        }
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_model_equals_the_reference(seed: int) -> None:
    tp = random_touchpoints(seed)
    mine = credit_by_model(tp)
    assert list(dict.fromkeys(mine["model"])) == list(MODELS)
    for model in MODELS:
        ref = attribute(tp, model, value_col="value")
        got = mine[mine["model"] == model].reset_index(drop=True)
        assert list(got["channel"]) == list(ref["channel"]), model
        for col in ("conversions", "value", "share"):
            np.testing.assert_allclose(got[col], ref[col], rtol=1e-12, atol=1e-9, err_msg=model)


def test_half_life_and_edge_cases() -> None:
    tp = random_touchpoints(4, n=300, journeys=60)
    mine = credit_by_model(tp, ["time_decay"], half_life="2h")
    ref = attribute(tp, "time_decay", half_life="2h", value_col="value")
    np.testing.assert_allclose(mine["conversions"], ref["conversions"], rtol=1e-12)
    nothing = tp.assign(converted=False)
    zero = credit_by_model(nothing, ["linear"])
    assert zero["conversions"].sum() == 0 and (zero["share"] == 0).all()
    assert credit_by_model(tp, []).empty
    with pytest.raises(MicrosegError, match="linear"):
        credit_by_model(tp, ["lineer"])
    with pytest.raises(MicrosegError, match="missing channel"):
        credit_by_model(tp.assign(channel=None), ["first"])
    with pytest.raises(MicrosegError, match="half_life"):
        credit_by_model(tp, ["time_decay"], half_life="0s")
