"""The studio benchmark runs end to end at a toy size (timings are measured on demand, never asserted)."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the studio needs fastapi")


@pytest.mark.slow
def test_studio_benchmark_reports_click_and_round_times():
    from benchmarks.studio import measure_click, measure_round

    click = measure_click(64, clicks=2)
    assert click["click_ms"] > 0 and click["first_click_s"] > 0
    row = measure_round(32, 8, 64, 2)
    for key in ("cache_s", "train_s", "predict_s"):
        assert row[key] > 0, key
