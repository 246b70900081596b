"""Prompts simulated from ground truth, to train a class-prompted model for interactive use.

`box`: per class, the bounding box of all its pixels (what a user drags around a structure).
`points`: per class, one positive point per connected component (largest components first, at most
`MAX_POINTS`), placed at the component's most interior pixel (largest distance to its border) so the
point is inside even for thin or concave shapes. Classes absent from an image get the whole image as
their box, or only padding points (label -1), and are trained to give an empty mask.
"""

from __future__ import annotations

import numpy as np
import torch

PROMPT_MODES = ("none", "box", "points")
MAX_POINTS = 8


def class_box(binary: np.ndarray, size: int) -> list[float]:
    """[x0, y0, x1, y1] (x1/y1 exclusive) around the True pixels; the whole size x size image if none."""
    ys, xs = np.nonzero(binary)
    if ys.size == 0:
        return [0.0, 0.0, float(size), float(size)]
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _component_points(binary: np.ndarray) -> list[tuple[float, float]]:
    from scipy import ndimage

    labels, count = ndimage.label(binary)
    if count == 0:
        return []
    sizes = ndimage.sum_labels(binary, labels, index=np.arange(1, count + 1))
    order = np.argsort(-sizes)[:MAX_POINTS] + 1
    distance = ndimage.distance_transform_edt(binary)
    points = []
    for label in order:
        inside = np.where(labels == label, distance, -1.0)
        y, x = np.unravel_index(int(np.argmax(inside)), inside.shape)
        points.append((x + 0.5, y + 0.5))  # pixel centre
    return points


def simulate_prompts(mask: torch.Tensor, num_classes: int, mode: str) -> dict[str, torch.Tensor]:
    """Prompts for `ClassPromptSegmenter.forward` from index masks (B, S, S) with labels 0..C.

    Returns {} for "none"; {"boxes": (B, C, 4)} for "box"; {"points": (B, C, N, 2),
    "point_labels": (B, C, N)} for "points" (N = most components of any class, padding label -1).
    """
    if mode == "none":
        return {}
    if mode not in PROMPT_MODES:
        raise ValueError(f"prompt mode must be one of {PROMPT_MODES}, got {mode!r}")
    masks = mask.detach().cpu().numpy()
    batch, size = masks.shape[0], masks.shape[-1]
    if mode == "box":
        boxes = [[class_box(masks[b] == c, size) for c in range(1, num_classes + 1)] for b in range(batch)]
        return {"boxes": torch.tensor(boxes, dtype=torch.float32, device=mask.device)}
    found = [[_component_points(masks[b] == c) for c in range(1, num_classes + 1)] for b in range(batch)]
    n = max(1, max(len(p) for row in found for p in row))
    points = torch.zeros(batch, num_classes, n, 2)
    labels = -torch.ones(batch, num_classes, n, dtype=torch.long)
    for b, row in enumerate(found):
        for c, class_points in enumerate(row):
            for i, (x, y) in enumerate(class_points):
                points[b, c, i] = torch.tensor([x, y])
                labels[b, c, i] = 1
    return {"points": points.to(mask.device), "point_labels": labels.to(mask.device)}
