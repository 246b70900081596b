"""evaluate_cases: known Dice/IoU on constructed masks, report files, empty cases, bad cases."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from samadapt.errors import UserError
from samadapt.evaluate.report import EvaluationCase, evaluate_cases, rank_cases


def _two_class_case(case_id: str, shift: int) -> EvaluationCase:
    gt = np.zeros((20, 20), dtype=np.uint8)
    gt[2:10, 2:10] = 1  # 64 pixels
    gt[12:16, 12:16] = 2  # 16 pixels
    pred = np.zeros_like(gt)
    pred[2:10, 2 + shift : 10 + shift] = 1  # overlap 8 * (8 - shift)
    pred[12:16, 12:16] = 2
    return EvaluationCase(case_id, pred, gt, image=np.linspace(0, 1, 400).reshape(20, 20))


def _read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_known_dice_iou_and_report_files(tmp_path):
    cases = [_two_class_case("a", 0), _two_class_case("b", 2), _two_class_case("c", 4)]
    result = evaluate_cases(iter(cases), tmp_path / "eval", class_names=["lung", "heart"])
    rows = {(r["case_id"], r["class"]): r for r in _read_rows(tmp_path / "eval" / "per_case.csv")}
    # shift 2: overlap 48 of 64 + 64 -> Dice 96 / 128, IoU 48 / 80
    assert float(rows[("b", "lung")]["dice"]) == pytest.approx(0.75)
    assert float(rows[("b", "lung")]["iou"]) == pytest.approx(0.6)
    assert float(rows[("c", "lung")]["dice"]) == pytest.approx(0.5)
    assert float(rows[("c", "heart")]["dice"]) == 1.0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["n_cases"] == 3 and summary["classes"] == ["lung", "heart"]
    lung = summary["per_class"]["lung"]["dice"]
    assert lung["mean"] == pytest.approx(0.75) and lung["sd"] == pytest.approx(0.25) and lung["n"] == 3
    assert summary["cases_by_dice"] == {"worst": "c", "median": "b", "best": "a"}
    assert result.summary == summary
    markdown = (tmp_path / "eval" / "summary.md").read_text()
    assert "| lung | 0.750 ± 0.250 |" in markdown
    overlays = sorted(p.name for p in (tmp_path / "eval" / "overlays").iterdir())
    assert overlays == ["best_a.png", "median_b.png", "worst_c.png"]


def test_empty_cases_are_counted_and_ruled(tmp_path):
    empty = np.zeros((8, 8), dtype=np.uint8)
    blob = empty.copy()
    blob[2:4, 2:4] = 1
    cases = [
        EvaluationCase("both_empty", empty, empty),
        EvaluationCase("false_alarm", blob, empty),
        EvaluationCase("missed", empty, blob),
        EvaluationCase("hit", blob, blob),
    ]
    result = evaluate_cases(cases, tmp_path / "eval", with_hd95=True, overlays=False)
    by_case = {r["case_id"]: r for r in result.rows}
    assert by_case["both_empty"]["dice"] == 1.0 and by_case["both_empty"]["hd95"] == 0.0
    assert by_case["false_alarm"]["dice"] == 0.0 and math.isnan(by_case["false_alarm"]["recall"])
    assert by_case["missed"]["recall"] == 0.0 and math.isnan(by_case["missed"]["precision"])
    stats = result.summary["per_class"]["class_1"]
    assert stats["dice"]["mean"] == pytest.approx(0.5)
    assert stats["precision"] == {"mean": 0.5, "sd": pytest.approx(math.sqrt(0.5)), "n": 2, "n_undefined": 2}
    assert stats["hd95"]["n_undefined"] == 2
    assert stats["empty_cases"] == {"gt_empty": 2, "pred_empty": 2, "both_empty": 1,
                                    "false_positive_on_empty": 1, "missed_entirely": 1}
    text = (tmp_path / "eval" / "per_case.csv").read_text()
    assert "missed,class_1,0,0,nan,0,nan,4,0" in text
    assert "NaN" not in (tmp_path / "eval" / "summary.json").read_text()  # undefined is null in JSON
    assert not (tmp_path / "eval" / "overlays").exists()


def test_absent_class_in_a_case_scores_as_correct_rejection(tmp_path):
    only_one = np.zeros((6, 6), dtype=np.uint8)
    only_one[1:3, 1:3] = 1
    two = only_one.copy()
    two[4:6, 4:6] = 2
    result = evaluate_cases([EvaluationCase("one", only_one, only_one), EvaluationCase("two", two, two)],
                            tmp_path / "eval", overlays=False)
    assert result.class_names == ["class_1", "class_2"]
    row = next(r for r in result.rows if r["case_id"] == "one" and r["class"] == "class_2")
    assert row["dice"] == 1.0 and row["gt_pixels"] == 0


def test_3d_volumes_with_spacing(tmp_path):
    gt = np.zeros((6, 6, 5), dtype=np.int16)
    gt[1:4, 1:4, 1:3] = 1
    pred = np.zeros_like(gt)
    pred[1:4, 1:4, 2:4] = 1
    result = evaluate_cases([EvaluationCase("vol", pred, gt, image=np.random.rand(6, 6, 5), spacing=(1.0, 1.0, 3.0))],
                            tmp_path / "eval", with_hd95=True)
    row = result.rows[0]
    assert row["dice"] == pytest.approx(0.5) and row["hd95"] == pytest.approx(3.0)
    assert (tmp_path / "eval" / "overlays" / "best_vol.png").is_file()


@pytest.mark.parametrize(
    "pred,gt,names,fragment",
    [
        (np.zeros((4, 4)), np.zeros((4, 5)), None, "differs from ground truth"),
        (np.full((4, 4), 0.5), np.zeros((4, 4)), None, "non-integer"),
        (np.full((4, 4), -1), np.zeros((4, 4)), None, "negative label"),
        (np.full((4, 4), 3), np.zeros((4, 4)), ["a", "b"], "label 3 but only 2 classes"),
        (np.zeros(4), np.zeros(4), None, "2D or 3D"),
    ],
)
def test_bad_cases_name_the_case(tmp_path, pred, gt, names, fragment):
    with pytest.raises(UserError, match=fragment) as error:
        evaluate_cases([EvaluationCase("c9", pred, gt)], tmp_path / "eval", class_names=names)
    assert "'c9'" in str(error.value)
    assert not (tmp_path / "eval").exists()  # nothing half-written


def test_no_cases_and_duplicates(tmp_path):
    with pytest.raises(UserError, match="no cases"):
        evaluate_cases([], tmp_path / "eval")
    mask = np.zeros((3, 3), dtype=np.uint8)
    with pytest.raises(UserError, match="appears twice"):
        evaluate_cases([EvaluationCase("x", mask, mask), EvaluationCase("x", mask, mask)], tmp_path / "eval")


def test_rank_cases_breaks_ties_by_id():
    assert rank_cases({"b": 0.5, "a": 0.5, "c": 0.1, "d": 0.9}) == {"worst": "c", "median": "a", "best": "d"}
