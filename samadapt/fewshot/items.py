"""The unit few-shot works on: one 2D image, or one slice of a volume, in the model's geometry.

A 3D case contributes one item per slice along its `slice_axis`; item ids follow the convention of
`samadapt.data.torch_datasets.SegmentationDataset` (`case` for 2D, `case:z012` for slice 12), and
the preprocessing is the same (2D: scaled to [0, 1] by dtype; 3D: the volume clipped to its own
0.5–99.5 percentiles, so every slice shares one intensity scale), so features cached here match
what the fine-tuning commands would feed the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from samadapt.data.dataset import Case
from samadapt.data.intensity import DEFAULT_INTENSITY, scale_volume
from samadapt.data.preprocess import (
    Letterbox,
    letterbox_mask,
    letterbox_unit_image,
    normalize,
    unit_image,
    unit_slice,
)

# Part of every cache key: bump it when the preprocessing below changes, so old caches are refused.
PREPROCESS_VERSION = "letterbox-imagenet-v1;2d=unit-range;3d=clip-0.5-99.5;3d-orientation=RAS"


@dataclass(frozen=True)
class Item:
    """One 2D image (`slice_index` None) or one slice of a volume."""

    case: Case
    slice_index: int | None = None

    @property
    def item_id(self) -> str:
        return self.case.id if self.slice_index is None else f"{self.case.id}:z{self.slice_index:03d}"


def case_items(case: Case) -> list[Item]:
    """The items of one case: itself (2D) or each of its slices (3D)."""
    if case.dims != "3d":
        return [Item(case)]
    from samadapt.data.volumes import read_volume_shape

    return [Item(case, z) for z in range(read_volume_shape(case.image)[case.slice_axis])]


def unit_images(case: Case) -> list[np.ndarray]:
    """(H, W, 3) float32 [0, 1] images of a case's items, in item order (one read per case)."""
    if case.dims != "3d":
        return [unit_image(case.load_image())]
    volume = case.load_scaled_volume()
    return [unit_slice(volume, case.slice_axis, z) for z in range(volume.shape[case.slice_axis])]


def unit_volume_slices(volume: np.ndarray, axis: int, intensity: str = DEFAULT_INTENSITY) -> list[np.ndarray]:
    """The same per-slice preprocessing for a raw volume array (prediction on a volume file)."""
    scaled = scale_volume(volume, intensity)
    return [unit_slice(scaled, axis, z) for z in range(scaled.shape[axis])]


def model_input(unit: np.ndarray, size: int) -> tuple[torch.Tensor, Letterbox]:
    """(H, W, 3) [0, 1] -> normalised pixel values (3, size, size) and the letterbox geometry."""
    square, box = letterbox_unit_image(unit, size)
    return normalize(square, box), box


def item_masks(case: Case, classes: list[str]) -> list[np.ndarray]:
    """Index masks (H, W) uint8 of a case's items with labels renumbered to `classes` order."""
    from samadapt.data.masks import remap_classes

    mask = remap_classes(case.load_mask(), case.class_names, classes)
    if case.dims != "3d":
        return [mask]
    return [np.take(mask, z, axis=case.slice_axis) for z in range(mask.shape[case.slice_axis])]


def model_mask(mask: np.ndarray, box: Letterbox) -> torch.Tensor:
    """(H, W) index mask -> (S, S) int64 on the model square (padding is background)."""
    return letterbox_mask(mask, box)
