"""The demo (the README's main job) on the real datasets."""

from __future__ import annotations

from pathlib import Path

from microseg.demo import run_demo


def test_demo_reproduces_online_retail_totals(tmp_path: Path, data_dir: Path) -> None:
    summary = run_demo(tmp_path / "demo", data_dir=data_dir)
    retail = summary.imports["online_retail"]
    assert retail.rows_read == 541_909
    assert retail.inserted + retail.duplicates + retail.quarantined == 541_909
    assert retail.reasons == {"below_minimum": 2}  # the two "Adjust bad debt" lines
    assert summary.extras["distinct_customers"] == 4_372
    rees = summary.imports["rees46"]
    assert (rees.rows_read, rees.inserted) == (17_434, 17_434)
    assert dict(summary.extras["event_types"])["product_view"] == 17_055
    assert summary.extras["traits"].rows == summary.counts["profiles"]
    rfm = dict(summary.extras["rfm_segments"])
    assert rfm["Champions"] > 0 and sum(rfm.values()) > 4_000
    segments = {name: size for name, size, _ in summary.extras["segments"]}
    assert segments["champions"] == rfm["Champions"]
    assert 0 < segments["quick_cart_abandoners"] < 193  # REES46: 193 purchasing users in all
    assert summary.extras["quality"].metrics
    # running it again is idempotent: everything is a duplicate, nothing new stored
    again = run_demo(tmp_path / "demo", data_dir=data_dir)
    assert again.imports["online_retail"].inserted == 0
    assert again.counts["events"] == summary.counts["events"]
