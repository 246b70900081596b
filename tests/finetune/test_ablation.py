"""`samadapt ablate-loss`: one run per loss preset and fold, pooled into one table."""

from __future__ import annotations

import csv

import pytest

from .conftest import read_json, run_cli


@pytest.mark.slow
def test_ablation_table_over_losses_and_folds(anatomy, anatomy_cv, tmp_path, capsys):
    out = tmp_path / "ablation"
    args = ["ablate-loss", "--data", anatomy[0], "--split", anatomy_cv, "--out", out, "--folds", "all",
            "--losses", "dice,focal-tversky", "--image-size", "64", "--epochs", "1", "--batch-size", "1", "--model", "unet", "--train", "all"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    rows = list(csv.DictReader((out / "ablation.csv").open()))
    assert [r["loss"] for r in rows] == ["dice", "focal-tversky"]
    assert all(int(r["n"]) == 4 for r in rows)  # 4 cases pooled over the 2 folds' validation parts
    table = read_json(out / "ablation.json")
    assert table["folds"] == [0, 1] and len(table["per_case"]) == 8
    assert "| focal-tversky |" in (out / "ablation.md").read_text()
    assert (out / "dice" / "fold1" / "model").is_dir()
    # Rerunning reuses the finished runs instead of training again.
    code, _, err = run_cli(args, capsys)
    assert code == 0, err


def test_ablation_refuses_unknown_presets_and_folds(anatomy, anatomy_cv, tmp_path, capsys):
    base = ["ablate-loss", "--data", anatomy[0], "--split", anatomy_cv, "--out", tmp_path / "a"]
    code, _, err = run_cli([*base, "--losses", "dice,hinge"], capsys)
    assert code == 2 and "hinge" in err
    code, _, err = run_cli([*base, "--folds", "0,5"], capsys)
    assert code == 2 and "[5]" in err
