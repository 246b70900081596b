"""`samadapt demo` runs end to end on generated phantoms and writes real numbers."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from samadapt.cli import main


def test_demo_writes_masks_overlays_and_scores(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n", "2", "--image-size", "128"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 2 and len(summary["cases"]) == 2
    for case in summary["cases"]:
        assert 0.0 <= case["dice"] <= 1.0 and 0.0 <= case["iou"] <= 1.0
        image = Image.open(out / "data" / "images" / f"{case['case']}.png")
        mask = np.asarray(Image.open(out / "predict" / f"{case['case']}_mask.png"))
        assert mask.shape == (image.height, image.width)
        assert (out / "predict" / f"{case['case']}_overlay.png").is_file()


def test_demo_rejects_bad_count(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--n", "0"]) == 2
    assert "--n 0" in capsys.readouterr().err
