"""Segmentation metrics per case and per class, with explicit rules for empty masks.

Scores come from MONAI's metric functions (`compute_dice`, `compute_iou`, `get_confusion_matrix` +
`compute_confusion_matrix_metric` for precision and recall, `compute_hausdorff_distance` with the
95th percentile, `compute_surface_dice` for the normalised surface Dice at a tolerance); distances
are in millimetres when a voxel spacing is given, in pixels otherwise. The rules below are then enforced on top so that they do not depend on MONAI's
version-specific handling of empty masks. For one class in one case, with G = ground truth and
P = prediction:

    G empty, P empty        dice = iou = nsd = 1 (correct rejection), precision = recall = NaN, hd95 = 0
    G empty, P not empty    dice = iou = nsd = 0, precision = 0, recall = NaN, hd95 = NaN
    G not empty, P empty    dice = iou = nsd = 0, precision = NaN, recall = 0, hd95 = NaN
    both non-empty          the usual definitions (hd95 and the nsd tolerance in mm with a spacing)

NaN means "undefined": `aggregate` leaves it out of means and counts it separately. docs/evaluation.md
states the same rules for readers of the reports.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

OVERLAP_METRICS = ("dice", "iou", "precision", "recall")
METRIC_NAMES = (*OVERLAP_METRICS, "hd95", "nsd")


def overlap_scores(pred, gt) -> dict:
    """Dice, IoU, precision and recall of binary masks.

    pred, gt: torch tensors (B, C, *spatial) of {0, 1} (bool or numeric), one channel per class.
    Returns {metric: tensor (B, C)} with the empty-mask rules of this module applied.
    """
    import torch
    from monai.metrics import compute_confusion_matrix_metric, compute_dice, compute_iou, get_confusion_matrix

    pred = torch.as_tensor(pred).float()
    gt = torch.as_tensor(gt).float()
    if pred.shape != gt.shape or pred.ndim < 3:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must both be (B, C, *spatial)")
    spatial = tuple(range(2, pred.ndim))
    pred_size, gt_size = pred.sum(spatial), gt.sum(spatial)
    pred_empty, gt_empty = pred_size == 0, gt_size == 0
    nan = torch.full_like(pred_size, math.nan)

    dice = compute_dice(pred, gt, include_background=True, ignore_empty=False)
    iou = compute_iou(pred, gt, include_background=True, ignore_empty=False)
    confusion = get_confusion_matrix(pred, gt, include_background=True)
    precision = compute_confusion_matrix_metric("precision", confusion)
    recall = compute_confusion_matrix_metric("recall", confusion)

    both_empty = pred_empty & gt_empty
    one_empty = pred_empty ^ gt_empty
    return {
        "dice": torch.where(both_empty, 1.0, torch.where(one_empty, 0.0, dice)),
        "iou": torch.where(both_empty, 1.0, torch.where(one_empty, 0.0, iou)),
        "precision": torch.where(pred_empty, nan, precision),
        "recall": torch.where(gt_empty, nan, recall),
    }


def _per_mask_pair(pred, gt, both_empty: float, one_empty: float, distance):
    """`distance(pred_bc, gt_bc)` (each (1, 1, *spatial) float) for every (image, class) where both
    masks are non-empty; `both_empty` / `one_empty` elsewhere. (B, C, *spatial) -> (B, C) float64."""
    import warnings

    import torch

    pred = torch.as_tensor(pred).bool()
    gt = torch.as_tensor(gt).bool()
    spatial = tuple(range(2, pred.ndim))
    pred_empty, gt_empty = ~pred.any(dim=spatial), ~gt.any(dim=spatial)
    result = torch.full(pred_empty.shape, one_empty, dtype=torch.float64)
    result[pred_empty & gt_empty] = both_empty
    for b, c in (~pred_empty & ~gt_empty).nonzero().tolist():
        with warnings.catch_warnings():  # MONAI warns about empty masks, which we never pass
            warnings.simplefilter("ignore")
            value = distance(pred[b : b + 1, c : c + 1].float(), gt[b : b + 1, c : c + 1].float())
        result[b, c] = float(value.reshape(-1)[0])
    return result


def _spacing_list(spacing: Sequence[float] | None) -> list[float] | None:
    return None if spacing is None else [float(s) for s in spacing]


def hd95_scores(pred, gt, spacing: Sequence[float] | None = None):
    """95th-percentile symmetric Hausdorff distance of binary masks (B, C, *spatial) -> (B, C).

    `spacing` is the physical size of one pixel/voxel per spatial axis (same for the whole batch);
    without it distances are in pixels. Both empty -> 0; exactly one empty -> NaN.
    """
    from monai.metrics import compute_hausdorff_distance

    return _per_mask_pair(pred, gt, 0.0, math.nan, lambda p, g: compute_hausdorff_distance(
        p, g, include_background=True, percentile=95, spacing=_spacing_list(spacing)))


def surface_dice_scores(pred, gt, tolerance: float, spacing: Sequence[float] | None = None):
    """Normalised surface Dice of binary masks (B, C, *spatial) -> (B, C): the fraction of both
    boundaries lying within `tolerance` (mm with `spacing`, else pixels) of the other boundary.
    Both empty -> 1; exactly one empty -> 0."""
    from monai.metrics import compute_surface_dice

    return _per_mask_pair(pred, gt, 1.0, 0.0, lambda p, g: compute_surface_dice(
        p, g, [float(tolerance)], include_background=True, spacing=_spacing_list(spacing)))


def absent_label_scores(with_hd95: bool = False, with_nsd: bool = False) -> dict[str, float]:
    """The scores of a class that neither the prediction nor the ground truth contains."""
    scores = {"dice": 1.0, "iou": 1.0, "precision": math.nan, "recall": math.nan}
    if with_hd95:
        scores["hd95"] = 0.0
    if with_nsd:
        scores["nsd"] = 1.0
    return {**scores, "gt_pixels": 0, "pred_pixels": 0}


def case_scores(
    pred: np.ndarray,
    gt: np.ndarray,
    labels: Iterable[int],
    spacing: Sequence[float] | None = None,
    with_hd95: bool = False,
    nsd_tolerance: float | None = None,
) -> dict[int, dict[str, float]]:
    """Scores of one case for each label in `labels`.

    pred, gt: integer index masks of the same shape, (H, W) or (D, H, W); 0 is background.
    nsd_tolerance: also the normalised surface Dice at this tolerance (mm with `spacing`).
    Returns {label: {"dice", "iou", "precision", "recall", ["hd95"], ["nsd"], "gt_pixels", "pred_pixels"}}.
    Classes are scored one at a time so that a large 3D volume never needs a full one-hot copy.
    """
    import torch

    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    results: dict[int, dict[str, float]] = {}
    for label in labels:
        pred_mask = torch.from_numpy(np.ascontiguousarray(pred == label))[None, None]
        gt_mask = torch.from_numpy(np.ascontiguousarray(gt == label))[None, None]
        gt_pixels, pred_pixels = int(gt_mask.sum()), int(pred_mask.sum())
        if gt_pixels == 0 and pred_pixels == 0:
            results[int(label)] = absent_label_scores(with_hd95, nsd_tolerance is not None)
            continue
        row = {name: float(value.reshape(-1)[0]) for name, value in overlap_scores(pred_mask, gt_mask).items()}
        if with_hd95:
            row["hd95"] = float(hd95_scores(pred_mask, gt_mask, spacing)[0, 0])
        if nsd_tolerance is not None:
            row["nsd"] = float(surface_dice_scores(pred_mask, gt_mask, nsd_tolerance, spacing)[0, 0])
        results[int(label)] = {**row, "gt_pixels": gt_pixels, "pred_pixels": pred_pixels}
    return results


def aggregate(values: Iterable[float]) -> dict[str, float | int | None]:
    """Mean and sample standard deviation of the defined (non-NaN) values, and how many were NaN.

    Returns {"mean", "sd", "n", "n_undefined"}; mean is None with no defined value, sd None below two.
    """
    array = np.asarray(list(values), dtype=np.float64)
    defined = array[~np.isnan(array)]
    return {
        "mean": float(defined.mean()) if defined.size else None,
        "sd": float(defined.std(ddof=1)) if defined.size > 1 else None,
        "n": int(defined.size),
        "n_undefined": int(array.size - defined.size),
    }


def empty_case_counts(rows: Iterable[dict]) -> dict[str, int]:
    """Counts of the empty-mask situations among per-case rows of one class (keys of `case_scores`)."""
    counts = {"gt_empty": 0, "pred_empty": 0, "both_empty": 0, "false_positive_on_empty": 0, "missed_entirely": 0}
    for row in rows:
        gt_empty, pred_empty = row["gt_pixels"] == 0, row["pred_pixels"] == 0
        counts["gt_empty"] += gt_empty
        counts["pred_empty"] += pred_empty
        counts["both_empty"] += gt_empty and pred_empty
        counts["false_positive_on_empty"] += gt_empty and not pred_empty
        counts["missed_entirely"] += pred_empty and not gt_empty
    return counts
