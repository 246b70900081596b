"""Overlay pictures of a prediction against the ground truth on the image.

Colours: ground truth only (missed) in blue, prediction only (false alarm) in orange, agreement
(both foreground with the same label) in yellow. A pixel whose two labels differ counts as missed.
The pair of blue/orange stays distinguishable for the common forms of colour blindness.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samadapt.engine.atomic import atomic_file

MISSED_RGB = (0, 114, 255)
FALSE_ALARM_RGB = (255, 128, 0)
AGREEMENT_RGB = (255, 230, 0)
THUMBNAIL_SIDE = 512  # overlays are for looking at, so large images are shrunk to keep them light


def _grey_image(image: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) or (H, W, C) image -> float (H, W, 3) in [0, 1], robustly scaled; black if absent."""
    if image is None:
        return np.zeros((*shape, 3), dtype=np.float32)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image[..., :3] if image.shape[-1] >= 3 else image[..., :1].repeat(3, axis=-1)
    else:
        image = np.repeat(image[..., None], 3, axis=-1)
    low, high = np.percentile(image, (1, 99)) if image.size else (0.0, 1.0)
    if high <= low:
        low, high = float(image.min()), float(image.max())
    return np.clip((image - low) / max(high - low, 1e-6), 0.0, 1.0)


def representative_slice(pred: np.ndarray, gt: np.ndarray, image: np.ndarray | None = None):
    """The 2D view of a case: itself when 2D; for a volume, the slice along the last axis with the
    most foreground in prediction or ground truth (the middle one when both are empty).

    Returns (image_2d or None, pred_2d, gt_2d), each shrunk so the long side is at most THUMBNAIL_SIDE.
    """
    if pred.ndim == 3:
        foreground = ((pred > 0) | (gt > 0)).sum(axis=(0, 1))
        index = int(foreground.argmax()) if foreground.any() else pred.shape[-1] // 2
        pred, gt = pred[..., index], gt[..., index]
        if image is not None:
            image = image[..., index]
    step = max(1, int(np.ceil(max(pred.shape) / THUMBNAIL_SIDE)))
    # Striding (nearest neighbour) keeps labels exact; the image only needs to look right.
    pred, gt = pred[::step, ::step], gt[::step, ::step]
    if image is not None:
        image = np.asarray(image)[::step, ::step]
    return image, np.ascontiguousarray(pred), np.ascontiguousarray(gt)


def overlay_rgb(pred: np.ndarray, gt: np.ndarray, image: np.ndarray | None = None, alpha: float = 0.55) -> np.ndarray:
    """Blend the agreement colours over the image: (H, W) masks -> uint8 (H, W, 3)."""
    canvas = _grey_image(image, pred.shape)
    agreement = (gt > 0) & (pred == gt)
    missed = (gt > 0) & ~agreement
    false_alarm = (pred > 0) & (gt == 0)
    for region, colour in ((missed, MISSED_RGB), (false_alarm, FALSE_ALARM_RGB), (agreement, AGREEMENT_RGB)):
        canvas[region] = (1 - alpha) * canvas[region] + alpha * np.asarray(colour, dtype=np.float32) / 255.0
    return (canvas * 255).round().astype(np.uint8)


def save_overlay(path: str | Path, pred: np.ndarray, gt: np.ndarray, image: np.ndarray | None, title: str) -> None:
    """Write a titled overlay PNG with a colour legend (2D inputs, see `representative_slice`)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Patch

    rgb = overlay_rgb(pred, gt, image)
    height, width = rgb.shape[:2]
    scale = 6.0 / max(height, width)
    figure = plt.figure(figsize=(max(width * scale, 3.0), height * scale + 0.9), dpi=100)
    try:
        axes = figure.add_axes((0, 0.12, 1, 0.8))
        axes.imshow(rgb, interpolation="nearest")
        axes.set_axis_off()
        figure.suptitle(title, fontsize=10)
        legend = [
            Patch(color=np.asarray(AGREEMENT_RGB) / 255, label="agreement"),
            Patch(color=np.asarray(MISSED_RGB) / 255, label="ground truth only"),
            Patch(color=np.asarray(FALSE_ALARM_RGB) / 255, label="prediction only"),
        ]
        figure.legend(handles=legend, loc="lower center", ncol=3, fontsize=8, frameon=False)
        with atomic_file(path, "wb") as handle:
            figure.savefig(handle, format="png")
    finally:
        plt.close(figure)
