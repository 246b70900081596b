"""Clips of consecutive slices from labelled volumes, for training SAM2's memory path.

A clip is one object (one class of one volume) on `length` consecutive slices, starting at a key
slice that shows it and running forward or backward along the slice axis (propagation runs both
ways). Slices go through exactly what `samadapt propagate` does to them (the volume's own
0.5-99.5 percentile clipping, the letterbox, normalisation), so the memory learns on the inputs it
will see. Training clips draw their key slice and direction from (seed, epoch, index); validation
clips are fixed: the slice with the most pixels of the class, in the direction with more room.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from samadapt.errors import UserError


@dataclass
class ClipVolume:
    """One labelled volume: model frames made on demand, labels (H, W, N) along the slice axis."""

    case_id: str
    frames: object  # samadapt.inference.propagate_volume.ModelFrames
    labels: np.ndarray


def load_clip_volumes(cases, size: int) -> list[ClipVolume]:
    """The cases' volumes and labels, slices moved to the last axis (as `propagate` reads them)."""
    from samadapt.data.preprocess import clip_percentiles
    from samadapt.data.volumes import read_volume
    from samadapt.inference.propagate_volume import ModelFrames, Stack

    volumes = []
    for case in cases:
        if case.dims != "3d":
            raise UserError("is a 2D image; memory training needs volumes (a dataset with dims: 3d)", case.image)
        image = np.moveaxis(read_volume(case.image, expect_3d=True).data, case.slice_axis, 2)
        labels = np.moveaxis(case.load_mask(), case.slice_axis, 2)
        if labels.shape != image.shape:
            raise UserError(f"mask of shape {labels.shape} does not fit the volume's {image.shape}", case.mask)
        if image.shape[2] < 2:
            raise UserError(f"volume of shape {image.shape} has a single slice along its slice axis", case.image)
        stack = Stack(case.image, unit_volume=clip_percentiles(image))
        volumes.append(ClipVolume(case.id, ModelFrames(stack, size), labels.astype(np.uint8)))
    return volumes


def clip_slices(key: int, direction: int, length: int, depth: int) -> list[int]:
    """`length` slice indices from `key` in `direction` (+1/-1); the other way where that has more
    room, shorter where neither has enough (a volume has at least 2 slices, so >= 2 come back)."""
    room = {1: depth - key, -1: key + 1}
    if room[direction] < length and room[-direction] > room[direction]:
        direction = -direction
    return [key + direction * i for i in range(min(length, room[direction]))]


def box_prompt(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bounding box of mask (S, S) as SAM2's two corner points (2, 2) (x, y) and labels (2, 3)."""
    rows, cols = torch.nonzero(mask, as_tuple=True)
    corners = torch.tensor([[cols.min(), rows.min()], [cols.max() + 1, rows.max() + 1]], dtype=torch.float32)
    return corners, torch.tensor([2, 3], dtype=torch.int32)


class VolumeClips(torch.utils.data.Dataset):
    """Items {"frames": (T, 3, S, S), "targets": (T, S, S) float, "mask" (S, S) or "points" (2, 2)
    and "labels" (2,)}: one per volume and class present in it (times `repeat`)."""

    def __init__(self, volumes: list[ClipVolume], length: int, prompt: str, *, seed: int = 0, repeat: int = 1,
                 fixed: bool = False):
        self.volumes, self.length, self.prompt = volumes, length, prompt
        self.seed, self.fixed = seed, fixed
        self.epoch_source = lambda: 0
        objects = [(v, int(c)) for v, volume in enumerate(volumes) for c in np.unique(volume.labels) if c != 0]
        if not objects:
            raise UserError(f"no labelled voxels in the {len(volumes)} volume(s): nothing to prompt a clip with")
        self.objects = objects * repeat

    def __len__(self) -> int:
        return len(self.objects)

    def _key_and_direction(self, labels: np.ndarray, value: int, index: int) -> tuple[int, int]:
        counts = (labels == value).sum(axis=(0, 1))  # (N,) pixels of the class per slice
        if self.fixed:
            key = int(np.argmax(counts))
            return key, 1 if labels.shape[2] - key >= key + 1 else -1
        rng = np.random.default_rng([self.seed, self.epoch_source(), index])
        return int(rng.choice(np.flatnonzero(counts))), int(rng.choice([1, -1]))

    def __getitem__(self, index: int) -> dict:
        v, value = self.objects[index]
        volume = self.volumes[v]
        key, direction = self._key_and_direction(volume.labels, value, index)
        slices = clip_slices(key, direction, self.length, volume.labels.shape[2])
        from samadapt.data.preprocess import letterbox_mask

        box = volume.frames.box
        frames = torch.stack([volume.frames[z] for z in slices])  # (T, 3, S, S)
        targets = torch.stack([letterbox_mask(volume.labels[:, :, z] == value, box) for z in slices]).float()
        item = {"frames": frames, "targets": targets}
        if self.prompt == "mask":
            item["mask"] = targets[0]
        else:
            item["points"], item["labels"] = box_prompt(targets[0])
        return item


def collate_clips(items: list[dict]) -> list[dict]:
    """Clips differ in length near a volume's ends: a batch is a list of them."""
    return list(items)
