"""The studio's "propagate": SAM2's memory carries the labels of a volume's edited slices through
its other slices, forward and backward, as `samadapt propagate --labels` does with a label volume.

No training: each edited slice prompts every class it shows with its mask, and the result replaces
the case's prediction layer; the edited slices come back exactly as drawn. The memory model is
built from the studio's `--init` on first use (it must hold SAM2's memory half: Meta's
`sam2*_hiera_*.pt` or a Hugging Face sam2_video folder); with random weights it is a seeded
random draw and its masks mean nothing.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np


class MemoryPropagator:
    """The memory model of `--init`, built once, and propagation of one case's edits."""

    def __init__(self, model_name: str, weights: Path | None, image_size: int):
        self.model_name, self.weights, self.image_size = model_name, weights, image_size
        self._model, self._building = None, threading.Lock()

    @property
    def model(self):
        import torch

        from samadapt.fewshot.cache import RANDOM_INIT_SEED
        from samadapt.modeling.sam2_video import accelerate_memory_model, load_memory_model

        with self._building:
            if self._model is None:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(RANDOM_INIT_SEED)  # random weights: the same draw on every start
                    memory = load_memory_model(self.model_name, self.weights, self.image_size)
                self._model = accelerate_memory_model(memory, fast=True)
            return self._model

    def propagate(self, image, edits: np.ndarray, keys: list[int], on_step=None) -> np.ndarray:
        """(A, B, N) uint8 labels of every slice of `image` (a `CaseImage` of a volume) from the
        (A, B, N) `edits` of its slices `keys` (each non-empty). `on_step(done, total, what)` is
        called after each slice visited (both directions counted)."""
        import torch

        from samadapt.fewshot.items import model_input
        from samadapt.fewshot.propagate import UnitFrames
        from samadapt.inference.propagate_volume import key_prompts, segment_frames

        units = [image.unit(z) for z in range(image.slices)]
        box = model_input(units[0], self.image_size)[1]
        given = {z: edits[:, :, z] for z in keys}
        progress = None if on_step is None else step_counter(on_step, len(units) - min(keys) + max(keys) + 1)
        model = self.model  # built outside inference mode: its weights stay ordinary tensors
        with torch.inference_mode():
            labels = segment_frames(model, UnitFrames(units, self.image_size), box, tuple(units[0].shape[:2]),
                                    key_prompts(given), given, progress=progress)  # (N, A, B)
        return np.ascontiguousarray(np.moveaxis(labels, 0, -1))


def step_counter(on_step, total: int):
    """A `propagate` progress wrapper: `on_step(done, total, direction)` after each slice visited
    (forward from the first key slice, then backward from the last)."""
    done = 0

    def wrap(iterable, count: int, direction: str):
        nonlocal done
        for value in iterable:
            yield value
            done += 1
            on_step(min(done, total), total, direction)

    return wrap
