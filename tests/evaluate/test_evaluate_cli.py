"""`samadapt evaluate` and `samadapt compare` end to end, and their one-line errors (exit code 2)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from samadapt.cli import main


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def _nifti(path, array, zooms=(1.0, 1.0, 2.0)):
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(np.asarray(array, dtype=np.uint8), np.diag([*zooms, 1.0]))
    nib.save(image, str(path))


def _square(shift=0, value=1):
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[4:12, 4 + shift : 12 + shift] = value
    return mask


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_evaluate_png_folders_reproduces_known_dice(tmp_path, capsys):
    _png(tmp_path / "gt" / "a.png", _square())
    _png(tmp_path / "pred" / "a.png", _square(value=255))  # binary {0, 255} prediction
    _png(tmp_path / "gt" / "b.png", _square())
    _png(tmp_path / "pred" / "b.png", _square(shift=4))  # overlap 32 of 64 + 64
    _png(tmp_path / "img" / "a.png", np.full((16, 16), 90))
    code, out, err = _run(["evaluate", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--out",
                           tmp_path / "eval", "--classes", "lesion", "--images", tmp_path / "img", "--hd95"], capsys)
    assert code == 0, err
    assert "evaluated 2 cases" in out
    with open(tmp_path / "eval" / "per_case.csv", newline="") as handle:
        rows = {r["case_id"]: r for r in csv.DictReader(handle)}
    assert float(rows["a"]["dice"]) == 1.0 and float(rows["b"]["dice"]) == pytest.approx(0.5)
    assert float(rows["b"]["iou"]) == pytest.approx(1 / 3) and float(rows["b"]["hd95"]) == pytest.approx(4.0)
    assert rows["a"]["class"] == "lesion"
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["per_class"]["lesion"]["dice"]["mean"] == pytest.approx(0.75)
    overlays = {p.name for p in (tmp_path / "eval" / "overlays").glob("*.png")}
    assert overlays == {"best_a.png", "median_b.png", "worst_b.png"}


def test_evaluate_nifti_volumes_uses_spacing(tmp_path, capsys):
    gt = np.zeros((8, 8, 6), dtype=np.uint8)
    gt[2:6, 2:6, 1:3] = 2
    pred = np.zeros_like(gt)
    pred[2:6, 2:6, 2:4] = 2
    _nifti(tmp_path / "gt" / "ct1.nii.gz", gt)
    _nifti(tmp_path / "pred" / "ct1.nii", pred)
    code, _, err = _run(["evaluate", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--out", tmp_path / "eval", "--hd95"], capsys)
    assert code == 0, err
    with open(tmp_path / "eval" / "per_case.csv", newline="") as handle:
        rows = {r["class"]: r for r in csv.DictReader(handle)}
    assert float(rows["class_2"]["dice"]) == pytest.approx(0.5)
    assert float(rows["class_2"]["hd95"]) == pytest.approx(2.0)  # one slice of 2 mm
    assert float(rows["class_1"]["dice"]) == 1.0  # absent from both: correct rejection


def test_compare_cli(tmp_path, capsys):
    for name, shift in (("base", 3), ("new", 1)):
        for case in range(6):
            _png(tmp_path / name / "pred" / f"c{case}.png", _square(shift=shift + case % 2))
            _png(tmp_path / "gt" / f"c{case}.png", _square())
        assert _run(["evaluate", "--pred", tmp_path / name / "pred", "--gt", tmp_path / "gt", "--out",
                     tmp_path / name / "eval", "--no-overlays"], capsys)[0] == 0
    code, out, err = _run(["compare", tmp_path / "base", tmp_path / "new", "--out", tmp_path / "cmp", "--resamples", "500"], capsys)
    assert code == 0, err
    assert "new - base: +0.2500" in out
    assert {p.name for p in (tmp_path / "cmp").iterdir()} == {"compare.json", "compare.md", "compare.png"}


@pytest.mark.parametrize(
    "setup,args,fragment",
    [
        ("mismatch", ["--pred", "{t}/pred", "--gt", "{t}/gt"], "do not match; 1 prediction file(s)"),
        ("mismatch", ["--pred", "{t}/pred", "--gt", "{t}/gt"], "without prediction: c, d"),
        ("none", ["--pred", "{t}/missing", "--gt", "{t}/gt"], "prediction folder not found"),
        ("empty", ["--pred", "{t}/pred", "--gt", "{t}/gt"], "no mask files"),
        ("shape", ["--pred", "{t}/pred", "--gt", "{t}/gt"], "has shape (8, 8) but ground truth"),
        ("colour", ["--pred", "{t}/pred", "--gt", "{t}/gt"], "colour mask"),
        ("ok", ["--pred", "{t}/pred", "--gt", "{t}/gt", "--classes", "a,,b"], "expected comma-separated names"),
    ],
)
def test_evaluate_bad_input_is_one_line_exit_2(tmp_path, capsys, setup, args, fragment):
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    if setup in ("mismatch", "ok", "shape", "colour"):
        _png(tmp_path / "gt" / "a.png", _square())
        _png(tmp_path / "pred" / "a.png", _square() if setup != "shape" else np.zeros((8, 8)))
    if setup == "mismatch":
        _png(tmp_path / "pred" / "x.png", _square())
        _png(tmp_path / "gt" / "c.png", _square())
        _png(tmp_path / "gt" / "d.png", _square())
    if setup == "colour":
        Image.fromarray(np.dstack([_square(), _square(1), _square(2)]) * 100).save(tmp_path / "pred" / "a.png")
    argv = ["evaluate", *[a.format(t=tmp_path) for a in args], "--out", tmp_path / "eval"]
    code, out, err = _run(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("samadapt: error:") and fragment in err
    assert not (tmp_path / "eval").exists()


def test_compare_bad_input_is_one_line_exit_2(tmp_path, capsys):
    code, _, err = _run(["compare", tmp_path / "nope", tmp_path / "nope2", "--out", tmp_path / "cmp"], capsys)
    assert code == 2 and "run folder not found" in err and err.count("\n") == 1


def test_missing_gt_option_is_one_line_exit_2(tmp_path, capsys):
    code, _, err = _run(["evaluate", "--pred", tmp_path, "--out", tmp_path / "eval"], capsys)
    assert code == 2 and "needs both --pred DIR and --gt DIR" in err


def test_importing_the_evaluation_modules_loads_no_heavy_library():
    import subprocess
    import sys

    code = (
        "import sys, samadapt.evaluate.commands, samadapt.evaluate.report, samadapt.evaluate.compare, "
        "samadapt.evaluate.folders; heavy = [m for m in ('torch', 'monai', 'matplotlib', 'scipy') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_evaluate_without_out_prints_the_summary_and_writes_nothing(tmp_path, capsys):
    _png(tmp_path / "gt" / "a.png", _square())
    _png(tmp_path / "pred" / "a.png", _square(shift=4))
    before = sorted(tmp_path.rglob("*"))
    code, out, err = _run(["evaluate", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt"], capsys)
    assert code == 0, err
    assert "| class_1 | 0.500" in out and "evaluated 1 cases (1 classes); mean Dice 0.5000" in out
    assert sorted(tmp_path.rglob("*")) == before


def test_predictions_named_like_predict_writes_them_pair_with_plain_ground_truth(tmp_path, capsys):
    """`predict` and `fewshot predict` write <stem>_mask.png beside <stem>_overlay.png: the masks
    pair with <stem>.png, the overlays are not read as predictions."""
    _png(tmp_path / "gt" / "a.png", _square())
    _png(tmp_path / "pred" / "a_mask.png", _square(value=255))
    _png(tmp_path / "pred" / "a_overlay.png", np.full((16, 16), 7))
    code, out, err = _run(["evaluate", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt"], capsys)
    assert code == 0, err
    assert "evaluated 1 cases (1 classes); mean Dice 1.0000" in out
