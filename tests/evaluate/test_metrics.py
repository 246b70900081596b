"""Per-class metrics on constructed masks, and each empty-mask rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from samadapt.evaluate.metrics import aggregate, case_scores, empty_case_counts, hd95_scores, overlap_scores


def _square(shape, top, left, size, label=1):
    mask = np.zeros(shape, dtype=np.uint8)
    mask[top : top + size, left : left + size] = label
    return mask


def test_known_dice_iou_precision_recall_2d():
    gt = _square((10, 10), 0, 0, 4)  # 16 pixels
    pred = _square((10, 10), 0, 2, 4)  # 16 pixels, overlap 2 x 4 = 8
    scores = case_scores(pred, gt, [1])[1]
    assert scores["dice"] == pytest.approx(2 * 8 / 32)
    assert scores["iou"] == pytest.approx(8 / 24)
    assert scores["precision"] == pytest.approx(8 / 16)
    assert scores["recall"] == pytest.approx(8 / 16)
    assert (scores["gt_pixels"], scores["pred_pixels"]) == (16, 16)


def test_multiclass_scores_each_label_separately():
    gt = _square((8, 8), 0, 0, 4, label=1) + _square((8, 8), 4, 4, 4, label=2)
    pred = gt.copy()
    pred[4:8, 4:6] = 1  # half of class 2 predicted as class 1
    scores = case_scores(pred, gt, [1, 2])
    assert scores[1]["recall"] == 1.0 and scores[1]["precision"] == pytest.approx(16 / 24)
    assert scores[2]["dice"] == pytest.approx(2 * 8 / 24) and scores[2]["precision"] == 1.0


def test_rule_both_empty_is_correct_rejection():
    empty = np.zeros((6, 6), dtype=np.uint8)
    scores = case_scores(empty, empty, [1], with_hd95=True)[1]
    assert scores["dice"] == 1.0 and scores["iou"] == 1.0 and scores["hd95"] == 0.0
    assert math.isnan(scores["precision"]) and math.isnan(scores["recall"])


def test_rule_false_positive_on_empty_ground_truth():
    pred = _square((6, 6), 1, 1, 2)
    scores = case_scores(pred, np.zeros_like(pred), [1], with_hd95=True)[1]
    assert scores["dice"] == 0.0 and scores["iou"] == 0.0 and scores["precision"] == 0.0
    assert math.isnan(scores["recall"]) and math.isnan(scores["hd95"])


def test_rule_missed_structure():
    gt = _square((6, 6), 1, 1, 2)
    scores = case_scores(np.zeros_like(gt), gt, [1], with_hd95=True)[1]
    assert scores["dice"] == 0.0 and scores["iou"] == 0.0 and scores["recall"] == 0.0
    assert math.isnan(scores["precision"]) and math.isnan(scores["hd95"])


def test_tensor_api_matches_rules_batched():
    pred = torch.zeros(2, 2, 4, 4)
    gt = torch.zeros(2, 2, 4, 4)
    pred[0, 0, :2] = 1
    gt[0, 0, :2] = 1  # perfect
    pred[1, 1, 0, 0] = 1  # false positive on empty
    scores = overlap_scores(pred, gt)
    assert scores["dice"].tolist() == [[1.0, 1.0], [1.0, 0.0]]
    assert scores["precision"][1, 1] == 0.0 and torch.isnan(scores["precision"][0, 1])


def test_hd95_2d_and_3d_with_spacing():
    gt = _square((12, 12), 2, 2, 4)
    pred = _square((12, 12), 2, 5, 4)  # shifted 3 columns
    assert case_scores(pred, gt, [1], with_hd95=True)[1]["hd95"] == pytest.approx(3.0)
    gt3 = np.zeros((6, 6, 6), dtype=np.uint8)
    gt3[1:3, 1:4, 1:4] = 1
    pred3 = np.zeros_like(gt3)
    pred3[2:4, 1:4, 1:4] = 1  # shifted one slice along axis 0
    assert case_scores(pred3, gt3, [1], with_hd95=True)[1]["hd95"] == pytest.approx(1.0)
    assert case_scores(pred3, gt3, [1], spacing=(2.5, 1.0, 1.0), with_hd95=True)[1]["hd95"] == pytest.approx(2.5)
    assert hd95_scores(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3)).item() == 0.0


def test_3d_dice():
    gt = np.zeros((4, 5, 5), dtype=np.int16)
    gt[:2] = 3
    pred = np.zeros_like(gt)
    pred[1:3] = 3
    assert case_scores(pred, gt, [3])[3]["dice"] == pytest.approx(0.5)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differs"):
        case_scores(np.zeros((3, 3)), np.zeros((3, 4)), [1])


def test_aggregate_excludes_and_counts_undefined():
    summary = aggregate([1.0, 0.5, math.nan])
    assert summary["mean"] == pytest.approx(0.75) and summary["n"] == 2 and summary["n_undefined"] == 1
    assert summary["sd"] == pytest.approx(np.std([1.0, 0.5], ddof=1))
    assert aggregate([math.nan]) == {"mean": None, "sd": None, "n": 0, "n_undefined": 1}


def test_empty_case_counts():
    rows = [
        {"gt_pixels": 0, "pred_pixels": 0},
        {"gt_pixels": 0, "pred_pixels": 3},
        {"gt_pixels": 5, "pred_pixels": 0},
        {"gt_pixels": 5, "pred_pixels": 5},
    ]
    assert empty_case_counts(rows) == {
        "gt_empty": 2,
        "pred_empty": 2,
        "both_empty": 1,
        "false_positive_on_empty": 1,
        "missed_entirely": 1,
    }
