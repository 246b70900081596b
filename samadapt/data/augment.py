"""Training augmentation built from MONAI dictionary transforms.

Image, mask and valid-region are transformed together (bilinear for the image, nearest for the mask
and the valid region), so labels stay aligned with pixels. Randomness is re-seeded per sample from
(seed, epoch, index): results do not depend on DataLoader worker count or scheduling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

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


class Augmentation:
    """Callable on a sample dict with `image` (3, S, S) float in [0, 1], optional `mask` (S, S)
    int64 and `valid` (S, S) bool; returns a new dict with the same keys, shapes and dtypes."""

    def __init__(self, config: AugmentConfig | None = None, seed: int = 0):
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
        if c.horizontal_flip:
            steps.append(RandFlipd(keys=keys, prob=0.5, spatial_axis=1, allow_missing_keys=True))
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


def build_augmentation(seed: int = 0, **options) -> Augmentation:
    """`Augmentation` with `AugmentConfig(**options)`; e.g. `build_augmentation(3, vertical_flip=True)`."""
    return Augmentation(AugmentConfig(**options), seed=seed)
