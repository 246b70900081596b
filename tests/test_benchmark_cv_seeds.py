"""Seed-averaged CV tables: each case's metrics are the mean over seeds; seeds must share their cases."""

from __future__ import annotations

import csv
import json

import pytest


def _pooled(root, model, rows):
    folder = root / "pooled" / model
    folder.mkdir(parents=True)
    with (folder / "per_case.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["case_id", "class", "dice", "iou", "gt_pixels"])
        writer.writeheader()
        for case, name, dice, pixels in rows:
            writer.writerow({"case_id": case, "class": name, "dice": dice, "iou": dice / 2, "gt_pixels": pixels})


def test_cases_are_averaged_over_seeds_and_each_seed_keeps_its_mean(tmp_path):
    from benchmarks.cv_seeds import main

    for seed, (a, b) in enumerate(((0.2, 0.4), (0.4, 0.8))):
        _pooled(tmp_path / f"s{seed}", "m", [("c1", "x", a, 10), ("c1", "y", b, 5), ("c2", "x", a, 7), ("c2", "y", b, 3)])
    summary = main([tmp_path / "s0", tmp_path / "s1"], ["m"], tmp_path / "out")
    with (tmp_path / "out" / "m" / "per_case.csv").open() as handle:
        rows = {(r["case_id"], r["class"]): r for r in csv.DictReader(handle)}
    assert float(rows["c1", "x"]["dice"]) == pytest.approx(0.3) and float(rows["c2", "y"]["iou"]) == pytest.approx(0.3)
    assert rows["c1", "x"]["gt_pixels"] == "10"  # the reference's size, not averaged
    assert list(summary["m"]["per_seed"].values()) == pytest.approx([0.3, 0.6])
    assert summary["m"]["range"] == pytest.approx([0.3, 0.6])
    assert json.loads((tmp_path / "out" / "seeds.json").read_text())["m"]["mean"] == pytest.approx(0.45)


def test_seeds_with_other_cases_are_refused(tmp_path):
    from benchmarks.cv_seeds import main

    _pooled(tmp_path / "s0", "m", [("c1", "x", 0.5, 1)])
    _pooled(tmp_path / "s1", "m", [("c2", "x", 0.5, 1)])
    with pytest.raises(SystemExit, match="other cases or classes"):
        main([tmp_path / "s0", tmp_path / "s1"], ["m"], tmp_path / "out")
