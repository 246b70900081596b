"""Image preprocessing as SAM/SAM2 expect it, in one place for every command.

An image of any size is scaled into [0, 1], made 3-channel, resized so its longer side equals the
model size (aspect ratio kept), padded at the bottom/right to a square, and normalised with the
ImageNet mean/std that both SAM and SAM2 were trained with. `Letterbox` remembers the geometry so
masks predicted on the square can be mapped back to the original pixel grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Letterbox:
    """Geometry of one resized + padded image: `original_hw` -> `resized_hw` inside `size`×`size`."""

    original_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    size: int

    @classmethod
    def fit(cls, height: int, width: int, size: int) -> "Letterbox":
        scale = size / max(height, width)
        resized = (max(1, round(height * scale)), max(1, round(width * scale)))
        return cls((int(height), int(width)), resized, int(size))

    def to_model_xy(self, xy: np.ndarray) -> np.ndarray:
        """Map (..., 2) pixel coordinates (x, y) of the original image onto the padded square."""
        scale = np.array([self.resized_hw[1] / self.original_hw[1], self.resized_hw[0] / self.original_hw[0]])
        return np.asarray(xy, dtype=np.float64) * scale


def to_unit_range(image: np.ndarray) -> np.ndarray:
    """Scale an image to float32 in [0, 1]: 8-bit by 255, other integer types and floats by their
    own minimum and maximum (16-bit scans rarely use the full 0..65535 range)."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == bool:
        return image.astype(np.float32)
    data = image.astype(np.float32)
    lo, hi = float(np.nanmin(data)), float(np.nanmax(data))
    if hi <= lo:
        return np.zeros_like(data, dtype=np.float32)
    return (data - lo) / (hi - lo)


def to_three_channels(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) with C in 1..4 -> (H, W, 3); alpha is dropped, grey is repeated."""
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=-1)
    channels = image.shape[-1]
    if channels == 1:
        return np.repeat(image, 3, axis=-1)
    if channels == 2:  # grey + alpha
        return np.repeat(image[..., :1], 3, axis=-1)
    return image[..., :3]


def unit_image(image: np.ndarray) -> np.ndarray:
    """A 2D image as read from disk -> (H, W, 3) float32 in [0, 1]: what every command feeds on."""
    return to_three_channels(to_unit_range(image))


def unit_slice(volume01: np.ndarray, axis: int, index: int) -> np.ndarray:
    """Slice `index` along `axis` of a volume already scaled by `clip_percentiles` -> (H, W, 3)."""
    return to_three_channels(np.take(volume01, index, axis=axis))


def prepare_image(image: np.ndarray, size: int) -> tuple[torch.Tensor, Letterbox]:
    """Turn one image into the model's input.

    Args:
        image: (H, W) or (H, W, C) array, any numeric dtype.
        size: the model's square input size (e.g. 1024, 512, 256).
    Returns:
        pixel values (3, size, size) float32, normalised; and the `Letterbox` to undo the geometry.
    """
    unit = unit_image(image)
    square, box = letterbox_unit_image(unit, size)
    return normalize(square, box), box


def letterbox_unit_image(unit: np.ndarray, size: int) -> tuple[torch.Tensor, Letterbox]:
    """(H, W, 3) float in [0, 1] -> (3, size, size) float32 still in [0, 1], padded with 0."""
    box = Letterbox.fit(unit.shape[0], unit.shape[1], size)
    tensor = torch.from_numpy(np.ascontiguousarray(unit.transpose(2, 0, 1), dtype=np.float32))[None]
    if box.resized_hw != box.original_hw:
        tensor = F.interpolate(tensor, size=box.resized_hw, mode="bilinear", align_corners=False, antialias=True)
        tensor = tensor.clamp_(0.0, 1.0)  # antialiasing can overshoot slightly
    pad_h, pad_w = size - box.resized_hw[0], size - box.resized_hw[1]
    return F.pad(tensor, (0, pad_w, 0, pad_h))[0].contiguous(), box


def normalize(square: torch.Tensor, box: Letterbox | None = None, valid: torch.Tensor | None = None) -> torch.Tensor:
    """ImageNet-normalise a (3, S, S) [0, 1] image; padding (outside `box` or where `valid` is
    False) is set to zero afterwards, i.e. to the dataset mean colour, as the models expect."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=square.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=square.dtype).view(3, 1, 1)
    out = (square - mean) / std
    if valid is None and box is not None:
        valid = valid_region(box)
    if valid is not None:
        out = out * valid.to(out.dtype)[None]
    return out.contiguous()


def valid_region(box: Letterbox) -> torch.Tensor:
    """(S, S) bool: True on the resized image, False on the padding."""
    valid = torch.zeros(box.size, box.size, dtype=torch.bool)
    valid[: box.resized_hw[0], : box.resized_hw[1]] = True
    return valid


def letterbox_mask(mask: np.ndarray, box: Letterbox) -> torch.Tensor:
    """(H, W) index mask -> (S, S) int64 on the padded square; nearest neighbour, padding = 0."""
    tensor = torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))[None, None].float()
    if box.resized_hw != box.original_hw:
        tensor = F.interpolate(tensor, size=box.resized_hw, mode="nearest-exact")
    pad_h, pad_w = box.size - box.resized_hw[0], box.size - box.resized_hw[1]
    return F.pad(tensor, (0, pad_w, 0, pad_h))[0, 0].round().long()


def clip_percentiles(volume: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """MRI/CT intensity scaling: clip to the volume's own `lower`..`upper` percentiles (computed over
    the whole volume, so every slice shares one scale) and map to float32 [0, 1]."""
    data = np.asarray(volume, dtype=np.float32)
    lo, hi = np.percentile(data, [lower, upper])
    if hi <= lo:
        return np.zeros_like(data)
    return ((np.clip(data, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def volume_slices(volume: np.ndarray, axis: int) -> np.ndarray:
    """(X, Y, Z) -> (N, H, W) slices along `axis` (a view; N = volume.shape[axis])."""
    return np.moveaxis(volume, axis, 0)


def stack_slices(slices, axis: int) -> np.ndarray:
    """Inverse of `volume_slices`: (N, H, W) or a list of (H, W) -> volume with N along `axis`."""
    return np.moveaxis(np.stack(list(slices), axis=0), 0, axis)


def restore_logits(logits: torch.Tensor, box: Letterbox) -> torch.Tensor:
    """Map mask logits on the padded square back to the original image grid.

    Args:
        logits: (..., h, w) on the model's square (any resolution, e.g. low-res size/4).
        box: the image's `Letterbox`.
    Returns:
        (..., H, W) logits at the original resolution.
    """
    lead = logits.shape[:-2]
    flat = logits.reshape(-1, 1, *logits.shape[-2:]).float()
    flat = F.interpolate(flat, size=(box.size, box.size), mode="bilinear", align_corners=False)
    flat = flat[..., : box.resized_hw[0], : box.resized_hw[1]]
    flat = F.interpolate(flat, size=box.original_hw, mode="bilinear", align_corners=False)
    return flat.reshape(*lead, *box.original_hw)
