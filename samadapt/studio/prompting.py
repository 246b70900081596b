"""SAM2 point and box prompts on one slice: the encoder runs once per slice, the decoder per click.

Features of recently prompted slices stay in memory (`FeatureMemory`, least recently used out), so
the second and later clicks on a slice only run the prompt encoder and mask decoder.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from samadapt.errors import UserError


class FeatureMemory:
    """Image features by (case key, slice), at most `capacity` of them."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict = OrderedDict()

    def get(self, key):
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        return None

    def put(self, key, value) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)


class SlicePrompter:
    """The frozen model of `--init`, built on first use, and the features of prompted slices."""

    def __init__(self, model_name: str, weights: Path | None, image_size: int, capacity: int):
        self.model_name, self.weights, self.image_size = model_name, weights, image_size
        self.memory = FeatureMemory(capacity)
        self.lock = threading.Lock()  # one model, requests from the server's worker threads
        self._model, self._building = None, threading.Lock()

    @property
    def model(self):
        """Built outside inference mode: its weights must stay ordinary tensors, since training
        rounds build their feature cache with it too."""
        import torch

        with self._building:
            if self._model is None:
                from samadapt.fewshot.cache import build_frozen_model

                with torch.inference_mode(False):
                    self._model = build_frozen_model(self.model_name, self.weights, self.image_size)
            return self._model

    def features(self, key, unit: np.ndarray):
        """(features, letterbox) of one (H, W, 3) [0, 1] slice, encoded unless remembered."""
        import torch

        from samadapt.fewshot.items import model_input

        found = self.memory.get(key)
        if found is None:
            pixels, box = model_input(unit, self.image_size)
            with torch.inference_mode():
                found = (self.model.encode(pixels[None]), box)
            self.memory.put(key, found)
        return found

    def segment(self, key, unit: np.ndarray, points: list[tuple[float, float, int]],
                box: tuple[float, float, float, float] | None) -> np.ndarray:
        """(H, W) bool mask of one slice for points (x, y, 1 positive / 0 negative) and/or a box
        (x0, y0, x1, y1), all in the slice's pixel coordinates."""
        import torch

        from samadapt.data.preprocess import restore_logits

        if not points and box is None:
            raise UserError("a prompt needs at least one point or a box")
        model = self.model  # built outside inference mode (see `model`)
        with self.lock, torch.inference_mode():
            features, letterbox = self.features(key, unit)
            prompts = {}
            if points:
                xy = letterbox.to_model_xy(np.array([p[:2] for p in points], dtype=np.float64))
                prompts["points"] = torch.tensor(xy, dtype=torch.float32)[None, None]  # (1, 1, N, 2)
                prompts["point_labels"] = torch.tensor([[[int(p[2]) for p in points]]])  # (1, 1, N)
            if box is not None:
                corners = letterbox.to_model_xy(np.array(box, dtype=np.float64).reshape(2, 2)).reshape(4)
                prompts["boxes"] = torch.tensor(corners, dtype=torch.float32)[None, None]  # (1, 1, 4)
            out = model.decode(features, **prompts)
            logits = restore_logits(out.logits[0, 0, 0], letterbox)  # (H, W)
        return (logits > 0).numpy()
