"""The label-efficiency curve reads each CV folder's fold summaries: mean and sd over folds per point."""

from __future__ import annotations

import json

import pytest


def _fold(root, model, fold, dice):
    folder = root / model / f"fold{fold}" / "eval"
    folder.mkdir(parents=True)
    metrics = {"dice": {"mean": dice}, "iou": {"mean": dice / 2}}
    (folder / "summary.json").write_text(json.dumps({"per_class": {"a": metrics}, "mean_over_classes": metrics}))


def test_curve_orders_points_and_summarises_folds(tmp_path):
    from benchmarks.cv_curve import curve, main

    for frames, values in ((10, (0.5, 0.7)), (3, (0.1, 0.3))):
        for fold, dice in enumerate(values):
            _fold(tmp_path / f"n{frames}", "unet", fold, dice)
    lines = curve({10: tmp_path / "n10", 3: tmp_path / "n3"}, ["unet", "absent"])
    (n3, m3, s3), (n10, m10, _) = lines["unet"]
    assert (n3, n10) == (3, 10) and m3 == pytest.approx(0.2) and m10 == pytest.approx(0.6)
    assert s3 == pytest.approx(0.1414, abs=1e-3)
    assert lines["absent"] == []
    main([f"3={tmp_path / 'n3'}", f"10={tmp_path / 'n10'}", "--models", "unet", "--out", str(tmp_path / "c.png")])
    assert (tmp_path / "c.png").stat().st_size > 0
