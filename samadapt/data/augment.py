"""Training augmentation built from MONAI dictionary transforms.

Image, mask and valid-region are transformed together (bilinear for the image, nearest for the mask
and the valid region), so labels stay aligned with pixels. Randomness is re-seeded per sample from
(seed, epoch, index): results do not depend on DataLoader worker count or scheduling.

Left/right classes: a mirrored chest shows its right lung on the side where the left one was. When
the class names come in pairs that differ only by a `left`/`right` word (`left_lung`/`right_lung`),
the horizontal flip also swaps the two labels, so laterality stays learnable; unpaired classes are
left as they are.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from monai.transforms import MapTransform, RandomizableTransform

SPATIAL_KEYS = ("image", "mask", "valid")


@dataclass(frozen=True)
class AugmentConfig:
    horizontal_flip: bool = True
    vertical_flip: bool = False  # off by default: anatomy is rarely up-down symmetric
    rotate_degrees: float = 10.0
    scale: float = 0.1  # zoom in/out by up to this fraction
    intensity: float = 0.1  # brightness/contrast jitter
    noise_std: float = 0.02
    prob: float = 0.5


def mirror_label_map(class_names: list[str] | None) -> torch.Tensor | None:
    """Lookup table (C + 1,) int64 that maps each label to its mirror image's label: label k of a
    `left...` class <-> label j of the same name with `right` (word-wise, any case); None when no
    class has a partner."""
    if not class_names:
        return None
    swap = {"left": "right", "right": "left"}

    def partner(name: str) -> str:
        return re.sub(r"(?i)(?<![a-z])(left|right)(?![a-z])",
                      lambda m: _same_case(swap[m.group(1).lower()], m.group(1)), name)

    index = {name: label for label, name in enumerate(class_names, start=1)}
    table = torch.arange(len(class_names) + 1)
    for name, label in index.items():
        other = partner(name)
        if other != name and other in index:
            table[label] = index[other]
    return table if bool((table != torch.arange(len(table))).any()) else None


def _same_case(word: str, like: str) -> str:
    return word.upper() if like.isupper() else word.capitalize() if like[0].isupper() else word


class RandMirrord(RandomizableTransform, MapTransform):
    """Flip the last axis of `keys` with probability `prob`; with `label_map`, also relabel
    `label_key` through it (left/right classes swap)."""

    def __init__(self, keys, prob: float, label_key: str = "mask", label_map: torch.Tensor | None = None):
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        RandomizableTransform.__init__(self, prob)
        self.label_key, self.label_map = label_key, label_map

    def __call__(self, data: dict) -> dict:
        out = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return out
        for key in self.key_iterator(out):
            out[key] = torch.flip(torch.as_tensor(out[key]), dims=(-1,))
        if self.label_map is not None and self.label_key in out:
            labels = torch.as_tensor(out[self.label_key])
            out[self.label_key] = self.label_map[labels.round().long()].to(labels.dtype)
        return out


class Augmentation:
    """Callable on a sample dict with `image` (3, S, S) float in [0, 1], optional `mask` (S, S)
    int64 and `valid` (S, S) bool; returns a new dict with the same keys, shapes and dtypes.
    `class_names` (labels 1..C of the mask) lets the horizontal flip swap left/right classes."""

    def __init__(self, config: AugmentConfig | None = None, seed: int = 0, class_names: list[str] | None = None):
        from monai.transforms import (
            Compose,
            RandAdjustContrastd,
            RandAffined,
            RandFlipd,
            RandGaussianNoised,
            RandScaleIntensityd,
            RandShiftIntensityd,
        )

        self.config = config or AugmentConfig()
        self.seed = int(seed)
        self.epoch = 0
        c = self.config
        keys = list(SPATIAL_KEYS)
        steps = []
        self.mirror_labels = mirror_label_map(class_names)
        if c.horizontal_flip:
            steps.append(RandMirrord(keys=keys, prob=0.5, label_map=self.mirror_labels))
        if c.vertical_flip:
            steps.append(RandFlipd(keys=keys, prob=0.5, spatial_axis=0, allow_missing_keys=True))
        if c.rotate_degrees or c.scale:
            steps.append(RandAffined(
                keys=keys, prob=c.prob, rotate_range=(math.radians(c.rotate_degrees),),
                scale_range=(c.scale, c.scale), mode=("bilinear", "nearest", "nearest"),
                padding_mode="zeros", allow_missing_keys=True,
            ))
        if c.intensity:
            steps += [
                RandScaleIntensityd(keys="image", factors=c.intensity, prob=c.prob),
                RandShiftIntensityd(keys="image", offsets=c.intensity / 2, prob=c.prob),
                RandAdjustContrastd(keys="image", gamma=(1 - 2 * c.intensity, 1 + 2 * c.intensity), prob=c.prob),
            ]
        if c.noise_std:
            steps.append(RandGaussianNoised(keys="image", std=c.noise_std, prob=c.prob))
        self.transform = Compose(steps)

    def set_epoch(self, epoch: int) -> None:
        """Different augmentations each epoch, still reproducible."""
        self.epoch = int(epoch)

    def __call__(self, sample: dict, index: int = 0) -> dict:
        self.transform.set_random_state(seed=(self.seed * 1_000_003 + self.epoch * 100_003 + int(index)) % (2**32))
        data = {"image": sample["image"].float()}
        # Masks travel as float channels so the spatial transforms accept them; nearest keeps labels exact.
        if "mask" in sample:
            data["mask"] = sample["mask"][None].float()
        if "valid" in sample:
            data["valid"] = sample["valid"][None].float()
        data = self.transform(data)
        out = dict(sample)
        image = torch.as_tensor(data["image"]).as_subclass(torch.Tensor)
        out["image"] = image.clamp(0.0, 1.0).contiguous()
        if "mask" in data:
            out["mask"] = torch.as_tensor(data["mask"]).as_subclass(torch.Tensor)[0].round().long()
        if "valid" in data:
            out["valid"] = torch.as_tensor(data["valid"]).as_subclass(torch.Tensor)[0] > 0.5
        return out


def build_augmentation(seed: int = 0, class_names: list[str] | None = None, **options) -> Augmentation:
    """`Augmentation` with `AugmentConfig(**options)`; e.g. `build_augmentation(3, vertical_flip=True)`."""
    return Augmentation(AugmentConfig(**options), seed=seed, class_names=class_names)
