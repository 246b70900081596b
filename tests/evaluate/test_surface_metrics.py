"""Normalised surface Dice and HD95 in millimetres, and Dice over cases with a non-empty reference,
on geometry small enough to check by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from clinical_files import write_itk

from samadapt.cli import main
from samadapt.evaluate.metrics import case_scores, surface_dice_scores
from samadapt.evaluate.report import EvaluationCase, evaluate_cases
from samadapt.errors import UserError


def _shifted_squares():
    """4x4 squares in a 10x10 image, the prediction one column to the right of the reference."""
    gt = np.zeros((1, 1, 10, 10), bool)
    pred = np.zeros((1, 1, 10, 10), bool)
    gt[0, 0, 2:6, 2:6] = True
    pred[0, 0, 2:6, 3:7] = True
    return pred, gt


def test_surface_dice_counts_the_boundary_within_the_tolerance():
    pred, gt = _shifted_squares()
    # Columns 2 mm apart, rows 1 mm: of each square's 12 boundary pixels, the 4 on the far column
    # edge (left for the reference, right for the prediction) are 2 mm from the other boundary and
    # the other 8 within 1 mm, so at 1 mm NSD = (8 + 8) / (12 + 12).
    assert float(surface_dice_scores(pred, gt, 1.0, spacing=(1.0, 2.0))[0, 0]) == pytest.approx(2 / 3)
    assert float(surface_dice_scores(pred, gt, 2.0, spacing=(1.0, 2.0))[0, 0]) == pytest.approx(1.0)
    assert float(surface_dice_scores(pred, gt, 1.0)[0, 0]) == pytest.approx(1.0)  # pixels: 1 apart
    empty = np.zeros_like(gt)
    assert float(surface_dice_scores(empty, empty, 1.0)[0, 0]) == 1.0
    assert float(surface_dice_scores(empty, gt, 1.0)[0, 0]) == 0.0


def test_hd95_and_nsd_use_the_voxel_spacing():
    gt, pred = np.zeros((5, 5, 7), np.uint8), np.zeros((5, 5, 7), np.uint8)
    gt[2, 2, 2] = 1
    pred[2, 2, 4] = 1  # two voxels of 3 mm apart: 6 mm
    scores = case_scores(pred, gt, [1], spacing=(1.0, 1.0, 3.0), with_hd95=True, nsd_tolerance=5.0)[1]
    assert scores["hd95"] == pytest.approx(6.0) and scores["nsd"] == 0.0
    scores = case_scores(pred, gt, [1], spacing=(1.0, 1.0, 3.0), with_hd95=True, nsd_tolerance=6.0)[1]
    assert scores["nsd"] == 1.0


def test_summary_reports_dice_over_cases_with_a_reference_beside_the_mean(tmp_path):
    square = np.zeros((8, 8), np.uint8)
    square[2:6, 2:6] = 1
    empty = np.zeros_like(square)
    cases = [EvaluationCase("hit", square, square), EvaluationCase("healthy", empty, empty),
             EvaluationCase("missed", empty, square)]
    result = evaluate_cases(cases, tmp_path / "eval", class_names=["lesion"], overlays=False, nsd_tolerance=1.0)
    summary = result.summary
    assert summary["mean_over_classes"]["dice"]["mean"] == pytest.approx(2 / 3)  # the healthy case scores 1
    assert summary["per_class"]["lesion"]["dice_with_reference"]["mean"] == pytest.approx(0.5)
    assert summary["mean_over_classes_with_reference"]["dice"]["mean"] == pytest.approx(0.5)
    assert summary["n_cases_with_reference"] == 2 and summary["nsd_tolerance"] == 1.0
    assert summary["per_class"]["lesion"]["nsd"]["mean"] == pytest.approx(2 / 3)
    text = (tmp_path / "eval" / "summary.md").read_text()
    assert "3 cases, 2 with a non-empty reference" in text and "dice, non-empty ref." in text
    assert "| lesion | 0.667 ± 0.577 |" in text and "| 0.500 ± 0.707 |" in text
    with pytest.raises(UserError, match="--nsd-tolerance -1"):
        evaluate_cases(cases, None, nsd_tolerance=-1.0)


def test_evaluate_folders_of_volumes_scores_in_millimetres(tmp_path, capsys):
    """NRRD label volumes stored with permuted axes: the 3 mm axis is found after reorientation."""
    direction = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # stored (S, L, P)
    gt, pred = np.zeros((7, 5, 5), np.uint8), np.zeros((7, 5, 5), np.uint8)
    gt[2, 2, 2] = 1
    pred[4, 2, 2] = 1  # stored axis 0 has 3 mm voxels
    for folder, data in (("gt", gt), ("pred", pred)):
        write_itk(tmp_path / folder / "case1.nrrd", data, (3.0, 1.0, 1.0), direction, (0.0, 0.0, 0.0))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--out",
                 str(tmp_path / "eval"), "--hd95", "--nsd-tolerance", "6", "--no-overlays"]) == 0
    assert "1 cases with a non-empty reference: Dice 0.0000" in capsys.readouterr().out
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["per_class"]["class_1"]["hd95"]["mean"] == pytest.approx(6.0)
    assert summary["per_class"]["class_1"]["nsd"]["mean"] == pytest.approx(1.0)


def test_compare_repeats_the_comparison_on_cases_with_a_reference(tmp_path, capsys):
    square = np.zeros((8, 8), np.uint8)
    square[2:6, 2:6] = 1
    empty = np.zeros_like(square)
    truths = {f"lesion{i}": square for i in range(4)} | {f"healthy{i}": empty for i in range(2)}
    careful = [EvaluationCase(c, gt, gt) for c, gt in truths.items()]
    eager = [EvaluationCase(c, square, gt) for c, gt in truths.items()]  # false alarms on healthy cases
    evaluate_cases(careful, tmp_path / "careful", overlays=False)
    evaluate_cases(eager, tmp_path / "eager", overlays=False)
    assert main(["compare", str(tmp_path / "careful"), str(tmp_path / "eager"), "--out", str(tmp_path / "cmp"),
                 "--resamples", "200"]) == 0
    out = capsys.readouterr().out
    assert "eager - careful: -0.3333" in out and "on the 4 cases with a non-empty reference:" in out
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    overall = [r for r in result["comparisons"] if r["class"] == "mean over classes"][0]
    lesions = [r for r in result["with_reference"]["comparisons"] if r["class"] == "mean over classes"][0]
    assert overall["mean_difference"] == pytest.approx(-1 / 3) and overall["n_pairs"] == 6
    assert lesions["mean_difference"] == 0.0 and lesions["n_pairs"] == 4
    assert "## Cases with a non-empty reference (4 cases)" in (tmp_path / "cmp" / "compare.md").read_text()
