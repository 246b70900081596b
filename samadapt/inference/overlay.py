"""Colour overlays of masks on images, for people to look at (predict, evaluation reports, demo)."""

from __future__ import annotations

import numpy as np

# Distinguishable colours (RGB) for classes 1..K; class k uses PALETTE[(k - 1) % len(PALETTE)].
PALETTE = np.array(
    [
        (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
        (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    ],
    dtype=np.float32,
)


def to_display_rgb(image: np.ndarray) -> np.ndarray:
    """Any (H, W) / (H, W, C) image -> (H, W, 3) uint8 for display (min-max scaled unless uint8)."""
    if image.dtype == np.uint8 and (image.ndim == 2 or image.shape[2] in (1, 3)):
        # already display-ready: skip the float round trip (a third of the write time at 512 px)
        return np.array(np.broadcast_to(image.reshape(image.shape[:2] + (-1,)), image.shape[:2] + (3,)))  # a writable copy
    from samadapt.data.preprocess import unit_image

    unit = unit_image(image)
    return np.clip(unit * 255.0 + 0.5, 0, 255).astype(np.uint8)


def overlay_labels(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45, outline: bool = True) -> np.ndarray:
    """Blend an index mask (H, W), 0 = background, onto an image; returns (H, W, 3) uint8."""
    rgb = to_display_rgb(image)
    if labels.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {labels.shape} differs from image shape {rgb.shape[:2]}")
    present = np.flatnonzero(np.bincount(labels.ravel())) if labels.dtype == np.uint8 else np.unique(labels)
    for k in present:
        if k == 0:
            continue
        where = labels == k
        colour = PALETTE[(int(k) - 1) % len(PALETTE)]
        # blend only the class's pixels, in float, then round back
        blended = (1 - alpha) * rgb[where].astype(np.float32) + alpha * colour
        rgb[where] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
        if outline:
            rgb[_boundary(where)] = colour.astype(np.uint8)
    return rgb


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of `mask` with at least one 4-neighbour outside it."""
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior
