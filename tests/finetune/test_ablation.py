"""`samadapt ablate-loss`: one run per loss preset and fold, pooled into one table."""

from __future__ import annotations

import csv

import pytest

from .conftest import read_json, run_cli


@pytest.mark.slow
def test_ablation_table_over_losses_and_folds(anatomy, anatomy_cv, tmp_path, capsys):
    out = tmp_path / "ablation"
    args = ["ablate-loss", "--data", anatomy[0], "--splits", anatomy_cv, "--out", out, "--folds", "all",
            "--losses", "dice,focal-tversky", "--image-size", "64", "--epochs", "1", "--batch-size", "1", "--model", "unet", "--train", "all"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    rows = list(csv.DictReader((out / "ablation.csv").open()))
    assert [r["loss"] for r in rows] == ["dice", "focal-tversky"]
    assert all(int(r["n"]) == 4 for r in rows)  # 4 cases pooled over the 2 folds' validation parts
    # No test part: the scored val parts must not also pick the checkpoint, so the last one is kept.
    assert "keeping the last epoch" in err
    assert all(r["part"] == "val" and r["keep"] == "last" for r in rows)
    table = read_json(out / "ablation.json")
    assert table["folds"] == [0, 1] and len(table["per_case"]) == 8
    assert table["part"] == "val" and table["keep"] == "last"
    assert read_json(out / "dice" / "fold0" / "config.json")["keep"] == "last"
    assert "| focal-tversky |" in (out / "ablation.md").read_text()
    assert (out / "dice" / "fold1" / "model").is_dir()
    # Rerunning reuses the finished runs instead of training again.
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    # ... but never labels a run trained with other settings by the new ones.
    longer = list(args)
    longer[longer.index("--epochs") + 1] = "2"
    code, _, err = run_cli(longer, capsys)
    assert code == 2 and "epochs" in err and str(out / "dice" / "fold0") in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1


@pytest.fixture(scope="module")
def anatomy_cv_test(tmp_path_factory, anatomy) -> str:
    """A 2-fold split of the anatomy phantoms with one patient held out as the test part."""
    from samadapt.data.dataset import load_dataset
    from samadapt.data.splits import make_splits, write_splits

    out = tmp_path_factory.mktemp("cv_test") / "splits.json"
    splits = make_splits(load_dataset(anatomy[0]), folds=2, test_fraction=0.25)
    assert len(splits["test"]["cases"]) == 1
    write_splits(splits, out)
    return str(out)


@pytest.mark.slow
def test_ablation_scores_the_test_part_when_best_selects_on_val(anatomy, anatomy_cv_test, tmp_path, capsys):
    out = tmp_path / "ablation"
    args = ["ablate-loss", "--data", anatomy[0], "--splits", anatomy_cv_test, "--out", out, "--folds", "all",
            "--losses", "dice", "--image-size", "64", "--epochs", "1", "--batch-size", "1", "--model", "unet",
            "--train", "all", "--keep", "best"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    table = read_json(out / "ablation.json")
    assert table["part"] == "test" and table["keep"] == "best"
    test_case = read_json(anatomy_cv_test)["test"]["cases"][0]
    # Each fold's model scores the one test case; no val case is scored.
    assert [row["case_id"] for row in table["per_case"]] == [test_case, test_case]
    assert "on the test part (checkpoint kept: best)" in stdout.splitlines()[-3]  # the best: line


def test_ablation_refuses_unknown_presets_and_folds(anatomy, anatomy_cv, tmp_path, capsys):
    base = ["ablate-loss", "--data", anatomy[0], "--splits", anatomy_cv, "--out", tmp_path / "a"]
    code, _, err = run_cli([*base, "--losses", "dice,hinge"], capsys)
    assert code == 2 and "hinge" in err
    code, _, err = run_cli([*base, "--folds", "0,5"], capsys)
    assert code == 2 and "[5]" in err
