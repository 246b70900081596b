"""`samadapt fewshot predict --propagate`: the few-shot decoder seeds SAM2's memory, and
propagation through the volume fills the other slices.

Seeds, one object per class, from `PropagationSeeds`:

- `confident`: the decoder segments every slice, as slice-wise prediction does. A slice's
  confidence for class c is the mean sigmoid probability over the pixels it labels c (a slice
  with no such pixel is no candidate). The `seed_count` most confident slices of each class
  (confidence to 4 decimals; ties: larger area, then lower index) prompt that class with the decoder's own mask, keep that
  mask in the output, and propagation runs forward and backward from them (`propagate`'s schedule).
- `support`: the run's first `seed_count` support slices, image and labels read from the run's
  training data, go in front of the volume as conditioning frames (as FS_MedSAM2 does), and
  propagation runs forward from them through every slice of the volume. No slice of the volume is
  prompted; the support frames are not part of the output.

A slice on which an object's score says "absent" comes out empty for that object, and tracking of
that object stops in that direction until its next seed.

The memory model is built from the weights the run's feature cache was built with (the same
`--init`), so it must hold SAM2's memory half. With random weights (no file) the memory is a seeded
random draw, and the run's own encoder is copied into it so that the memory sees the features the
seeds were predicted from.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from samadapt.errors import UserError
from samadapt.fewshot.config import PropagationSeeds


def memory_model_for_run(run, fast: bool = True):
    """`MemoryModel` from the weights of the run's feature cache (checked unchanged since)."""
    from samadapt.fewshot.cache import RANDOM_INIT_SEED, weights_fingerprint
    from samadapt.modeling.sam2_video import accelerate_memory_model, build_memory_model, load_memory_model

    identity = run.config.get("cache_model")
    if not identity:
        raise UserError("few-shot run records no cache model (saved by an older version): train it again to "
                        "propagate")
    name, weights, size = identity["name"], identity.get("weights"), int(identity["image_size"])
    if weights is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            memory = build_memory_model(name, size)
        # the run's encoder is the cache's (a seeded random draw of the image model)
        memory.hf.vision_encoder.load_state_dict(run.segmenter.sam.hf.vision_encoder.state_dict())
    else:
        memory = load_memory_model(name, weights, size)  # refuses weights without memory, by name
        if weights_fingerprint(weights) != identity.get("weights_fingerprint"):
            raise UserError("weights changed since the run's feature cache was built (fingerprint differs)", weights)
    return accelerate_memory_model(memory, fast=fast)


class UnitFrames(Sequence):
    """(H, W, 3) [0, 1] slices as the model's (3, S, S) inputs, made on demand."""

    def __init__(self, units: Sequence[np.ndarray], size: int):
        self.units, self.size = units, size

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, index: int) -> torch.Tensor:
        from samadapt.fewshot.items import model_input

        return model_input(self.units[index], self.size)[0]


def confident_seeds(logits: Sequence[torch.Tensor], count: int) -> list:
    """`KeyPrompt`s: per class, the `count` slices whose decoder masks are the most confident.

    logits: per slice, the decoder's (C, H, W) logits. Returns prompts ordered by (class, slice)."""
    from samadapt.inference.propagate_volume import KeyPrompt
    from samadapt.modeling.fewshot_segmenter import labels_from_logits

    candidates: dict[int, list[tuple[float, int, int, np.ndarray]]] = {}
    for z, slice_logits in enumerate(logits):
        labels = labels_from_logits(slice_logits)  # (H, W)
        for c in range(slice_logits.shape[0]):
            region = labels == c + 1
            area = int(region.sum())
            if area:
                # rounded: equal probabilities must tie whatever the float summation order
                confidence = round(float(torch.sigmoid(slice_logits[c][region].double()).mean()), 4)
                candidates.setdefault(c + 1, []).append((confidence, area, z, region.numpy()))
    prompts = []
    for obj_id, found in sorted(candidates.items()):
        best = sorted(found, key=lambda f: (-f[0], -f[1], f[2]))[:count]
        prompts += [KeyPrompt(obj_id, z, mask=mask) for _, _, z, mask in sorted(best, key=lambda f: f[2])]
    return prompts


@dataclass
class SupportFrame:
    """One support slice: (H, W, 3) [0, 1] image and (H, W) uint8 labels in the run's class order."""

    item_id: str
    unit: np.ndarray
    labels: np.ndarray


def read_support_frames(run, data: str | Path, count: int) -> list[SupportFrame]:
    """The run's first `count` support slices, read from the dataset they were picked from."""
    from samadapt.data.dataset import load_dataset
    from samadapt.data.intensity import check_same_intensity
    from samadapt.fewshot.items import Item, item_masks, unit_images

    items = list(run.config.get("support", []))[:count]
    if not items:
        raise UserError("few-shot run records no support slices", data)
    cases = {c.id: c for c in load_dataset(data).cases}
    frames = []
    for item_id in items:
        case_id, _, z = item_id.rpartition(":z") if ":z" in item_id else (item_id, "", "")
        case = cases.get(case_id)
        if case is None or not case.labeled:
            raise UserError(f"has no labelled case {case_id!r}, a support slice of the run: give the dataset the "
                            "run was trained on", data)
        index = int(z) if z else 0
        if case.dims == "3d":
            check_same_intensity(run.intensity, case.intensity, "the few-shot run's support", case.image)
        if Item(case, index if z else None).item_id != item_id:
            raise UserError(f"support item {item_id!r} does not name a slice of {case.image}", data)
        frames.append(SupportFrame(item_id, unit_images(case)[index], item_masks(case, run.classes)[index]))
    return frames


def _support_prompts(frames: Sequence[SupportFrame], size: int) -> list:
    """`FramePrompt`s on the support frames (frame i: support slice i), one per class present."""
    from samadapt.fewshot.items import model_input
    from samadapt.inference.propagate_volume import KeyPrompt, model_prompt

    prompts = []
    for index, frame in enumerate(frames):
        box = model_input(frame.unit, size)[1]
        for value in np.unique(frame.labels):
            if value:
                prompts.append(model_prompt(KeyPrompt(int(value), index, mask=frame.labels == value), box))
    return prompts


@dataclass
class VolumePropagation:
    """Everything `segment_slices` needs besides the run: the memory model and the seeds."""

    memory: object  # samadapt.modeling.sam2_video.MemoryModel
    seeds: PropagationSeeds = field(default_factory=PropagationSeeds)
    support: list[SupportFrame] = field(default_factory=list)
    stop_when_absent: bool = True
    last_seeds: list = field(default_factory=list)  # the prompts of the last volume (reporting, tests)

    def segment_slices(self, run, units: list[np.ndarray], batch_size: int = 4) -> Iterator[np.ndarray]:
        """(H, W) uint8 labels per slice of one volume's (H, W, 3) [0, 1] slices."""
        from samadapt.fewshot.items import model_input
        from samadapt.inference.propagate_volume import model_prompt, propagated_labels

        box = model_input(units[0], self.memory.image_size)[1]
        plane = tuple(units[0].shape[:2])
        if self.seeds.seed_slices == "support":
            frames = UnitFrames([f.unit for f in self.support] + list(units), self.memory.image_size)
            queries = _support_prompts(self.support, self.memory.image_size)
            self.last_seeds = [f.item_id for f in self.support]
            if not queries:
                return iter([np.zeros(plane, np.uint8) for _ in units])
            labels = propagated_labels(self.memory, frames, queries, box, plane, first=len(self.support),
                                       stop_when_absent=self.stop_when_absent)
            return iter(labels)
        from samadapt.fewshot.predict import restored_logits

        prompts = confident_seeds(list(restored_logits(run, units, batch_size)), self.seeds.seed_count)
        self.last_seeds = prompts
        if not prompts:  # the decoder finds nothing anywhere: nothing to propagate
            return iter([np.zeros(plane, np.uint8) for _ in units])
        labels = propagated_labels(self.memory, UnitFrames(units, self.memory.image_size),
                                   [model_prompt(p, box) for p in prompts], box, plane,
                                   stop_when_absent=self.stop_when_absent)
        for prompt in prompts:  # a seed slice keeps the decoder's mask of its class
            labels[prompt.slice][labels[prompt.slice] == prompt.obj_id] = 0
            labels[prompt.slice][prompt.mask] = prompt.obj_id
        return iter(labels)
