"""PyTorch datasets over `Case`s: labelled 2D images / 3D slices, and unlabeled images for MAE.

Every item is already in the model's geometry: letterboxed to `image_size` (longer side scaled to
the size, padding at bottom/right), ImageNet-normalised, with `valid` marking real (non-padding)
pixels so losses can ignore the padding. Decoded images are cached in memory up to a byte budget
(per process: each DataLoader worker keeps its own).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset as TorchDataset

from samadapt.data.dataset import Case, Dataset
from samadapt.data.intensity import DEFAULT_INTENSITY, scale_volume
from samadapt.data.io import file_stem, is_volume_file, list_files, read_image
from samadapt.data.volumes import read_volume, read_volume_shape
from samadapt.data.masks import remap_classes
from samadapt.data.preprocess import (
    letterbox_mask,
    letterbox_unit_image,
    normalize,
    unit_image,
    unit_slice,
    valid_region,
)
from samadapt.errors import UserError

DEFAULT_CACHE_BYTES = 512 * 1024**2


class _Cache:
    """Keep decoded arrays while they fit in `budget` bytes; beyond that, decode on demand."""

    def __init__(self, budget: int):
        self.budget = int(budget)
        self.used = 0
        self.items: dict = {}

    def get(self, key, load):
        if key in self.items:
            return self.items[key]
        value = load()
        if self.used + value.nbytes <= self.budget:
            self.items[key] = value
            self.used += value.nbytes
        return value


def _slice_items(image: Path, axis: int) -> int:
    return read_volume_shape(image)[axis]


def _finish(unit: np.ndarray, size: int, augment, index: int, case_id: str, mask: np.ndarray | None = None) -> dict:
    square, box = letterbox_unit_image(unit, size)
    sample = {"image": square, "valid": valid_region(box)}
    if mask is not None:
        sample["mask"] = letterbox_mask(mask, box)
    if augment is not None:
        sample = augment(sample, index)
    sample["image"] = normalize(sample["image"], valid=sample["valid"])
    sample["case_id"] = case_id
    return sample


class SegmentationDataset(TorchDataset):
    """Labelled items for fine-tuning and evaluation.

    Args:
        cases: labelled `Case`s (2D images, or 3D volumes which are served slice by slice along
            each case's `slice_axis`; the slice index is part of `case_id`, e.g. `hippo_001:z012`).
        image_size: model input size S.
        classes: class names in output order (index 1..K); classes of a case not listed become
            background. None: the first case's classes.
        augment: optional callable `(sample, index) -> sample`, e.g. `samadapt.data.augment.Augmentation`.
    Item: dict(image (3, S, S) float32 normalised, mask (S, S) int64, valid (S, S) bool, case_id str).
    """

    def __init__(self, cases: list[Case] | Dataset, image_size: int, classes: list[str] | None = None,
                 augment=None, cache_bytes: int = DEFAULT_CACHE_BYTES):
        cases = list(cases.labeled_cases() if isinstance(cases, Dataset) else cases)
        if not cases:
            raise UserError("no labelled cases to train or evaluate on")
        for case in cases:
            if not case.labeled:
                raise UserError(f"case {case.id!r} has no mask", case.image)
        self.cases = cases
        self.image_size = int(image_size)
        self.classes = list(classes) if classes is not None else cases[0].class_names
        self.augment = augment
        self._cache = _Cache(cache_bytes)
        self.items: list[tuple[int, int | None]] = []
        for number, case in enumerate(cases):
            if case.dims == "3d":
                self.items += [(number, z) for z in range(_slice_items(case.image, case.slice_axis))]
            else:
                self.items.append((number, None))

    def __len__(self) -> int:
        return len(self.items)

    def _image(self, case: Case) -> np.ndarray:
        if case.dims == "3d":
            return self._cache.get(("image", case.id), case.load_scaled_volume)
        return self._cache.get(("image", case.id), lambda: read_image(case.image))

    def _mask(self, case: Case) -> np.ndarray:
        return self._cache.get(("mask", case.id), lambda: remap_classes(case.load_mask(), case.class_names, self.classes))

    def __getitem__(self, index: int) -> dict:
        number, z = self.items[index]
        case = self.cases[number]
        image, mask = self._image(case), self._mask(case)
        if z is None:
            unit, case_id = unit_image(image), case.id
        else:
            unit, case_id = unit_slice(image, case.slice_axis, z), f"{case.id}:z{z:03d}"
            mask = np.take(mask, z, axis=case.slice_axis)
        if mask.shape != unit.shape[:2]:
            raise UserError(f"mask size {mask.shape} differs from image size {unit.shape[:2]}", case.mask)
        return _finish(unit, self.image_size, self.augment, index, case_id, mask)


class UnlabeledImageDataset(TorchDataset):
    """Images only, for self-supervised (MAE) pre-training.

    Args:
        sources: folders (searched recursively), image/volume files, `Dataset`s or `Case`s, mixed.
            NIfTI volumes contribute every slice along `slice_axis`.
        image_size: model input size S.
        augment: optional `(sample, index) -> sample` (spatial + intensity; no mask involved).
    Item: dict(image (3, S, S) float32 normalised, valid (S, S) bool, case_id str).
    """

    def __init__(self, sources, image_size: int, augment=None, slice_axis: int = 2,
                 cache_bytes: int = DEFAULT_CACHE_BYTES):
        if isinstance(sources, (str, Path, Dataset, Case)):
            sources = [sources]
        files: list[tuple[Path, int]] = []
        # Volumes of a described dataset are scaled as its `intensity` says; loose files by default.
        self._intensity: dict[Path, str] = {}
        for source in sources:
            if isinstance(source, Dataset):
                files += [(c.image, c.slice_axis) for c in source.cases]
                self._intensity.update((c.image, c.intensity) for c in source.cases)
            elif isinstance(source, Case):
                files.append((source.image, source.slice_axis))
                self._intensity[source.image] = source.intensity
            elif Path(source).is_dir():
                files += [(p, slice_axis) for p in list_files(source, recursive=True)]
            else:
                files.append((Path(source), slice_axis))
        self.items: list[tuple[Path, int, int | None]] = []
        for path, axis in files:
            if is_volume_file(path):
                self.items += [(path, axis, z) for z in range(_slice_items(path, axis))]
            else:
                self.items.append((path, axis, None))
        if not self.items:
            raise UserError(f"no images found in {', '.join(str(s) for s in sources)}")
        self.image_size = int(image_size)
        self.augment = augment
        self._cache = _Cache(cache_bytes)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        path, axis, z = self.items[index]
        if z is None:
            image = self._cache.get(path, lambda: read_image(path))
            unit, case_id = unit_image(image), file_stem(path)
        else:
            intensity = self._intensity.get(path, DEFAULT_INTENSITY)
            volume = self._cache.get(path, lambda: scale_volume(read_volume(path).data, intensity))
            unit, case_id = unit_slice(volume, axis, z), f"{file_stem(path)}:z{z:03d}"
        return _finish(unit, self.image_size, self.augment, index, case_id)
