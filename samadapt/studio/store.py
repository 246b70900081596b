"""The user's edits and the predictions, kept under FOLDER/.samadapt-studio/ so nothing is lost.

Per case (`edits/<case key>/`):

    state.json         {"case", "version", "shape", "slices": {"<z>": "z0012.v000007.png"}}
    z0012.v000007.png  the label slice (index PNG, model orientation) saved at version 7
    history.jsonl      one line per save: version, slice, time, labelled pixels, file

Every save writes a new slice file, then replaces state.json (both atomically), so a killed
server loses at most the stroke it was saving, and every earlier version stays on disk. A save
names the version it was based on; another save in between (a second tab) makes it a `Conflict`
instead of silently overwriting it.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from pathlib import Path

import numpy as np

from samadapt.engine.atomic import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from samadapt.errors import UserError

STATE_FILE = "state.json"
HISTORY_FILE = "history.jsonl"


class Conflict(Exception):
    """The case changed since the version the request was based on."""

    def __init__(self, current: int):
        super().__init__(f"the case was changed elsewhere (now at version {current}): reload it")
        self.current = current


class CaseEdits:
    """The edited label slices of one case: a (A, B, N) uint8 stack, items along the last axis."""

    def __init__(self, folder: Path, case_id: str, shape: tuple[int, int, int]):
        self.folder, self.case_id, self.shape = folder, case_id, tuple(shape)
        self.lock = threading.Lock()
        self.version, self.files = 0, {}
        self.labels = np.zeros(self.shape, dtype=np.uint8)
        self._restore()

    def _restore(self) -> None:
        from samadapt.data.io import read_image

        state_path = self.folder / STATE_FILE
        if not state_path.is_file():
            return
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"saved edits are unreadable ({exc})", state_path) from None
        if tuple(state.get("shape", ())) != self.shape:
            raise UserError(f"saved edits are for shape {state.get('shape')}, the image is {list(self.shape)} "
                            "(the image file changed?)", state_path)
        self.version = int(state["version"])
        for z, name in state["slices"].items():
            self.labels[:, :, int(z)] = read_image(self.folder / name, keep_indices=True)
            self.files[int(z)] = name

    @property
    def labelled_slices(self) -> list[int]:
        return sorted(z for z in self.files if self.labels[:, :, z].any())

    def save_slice(self, index: int, labels: np.ndarray, based_on: int) -> int:
        """Store item `index`'s labels (A, B) if the case is still at version `based_on`."""
        from samadapt.data.io import png_bytes

        if labels.shape != self.shape[:2]:
            raise UserError(f"label slice of shape {labels.shape} does not fit the case's {self.shape[:2]}")
        if not 0 <= index < self.shape[2]:
            raise UserError(f"slice {index} is outside 0..{self.shape[2] - 1}")
        with self.lock:
            if based_on != self.version:
                raise Conflict(self.version)
            version = self.version + 1
            name = f"z{index:04d}.v{version:06d}.png"
            ensure_writable_dir(self.folder)
            atomic_write_bytes(self.folder / name, png_bytes(labels.astype(np.uint8)))
            files = {**self.files, index: name}
            state = {"case": self.case_id, "version": version, "shape": list(self.shape),
                     "slices": {str(z): f for z, f in sorted(files.items())}}
            atomic_write_text(self.folder / STATE_FILE, json.dumps(state, indent=1) + "\n")
            self._log({"version": version, "slice": index, "time": time.time(),
                       "pixels": int(np.count_nonzero(labels)), "file": name})
            self.labels[:, :, index] = labels
            self.files, self.version = files, version
            return version

    def _log(self, entry: dict) -> None:
        with open(self.folder / HISTORY_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


class Predictions:
    """The latest predicted label stack per case (`predictions/<case key>.npy`), or none."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._stacks: dict[str, np.ndarray] = {}
        self.lock = threading.Lock()

    def get(self, key: str) -> np.ndarray | None:
        with self.lock:
            if key not in self._stacks:
                path = self.folder / f"{key}.npy"
                if not path.is_file():
                    return None
                try:
                    self._stacks[key] = np.load(path, allow_pickle=False)
                except (OSError, ValueError):
                    return None  # a prediction is recomputed by the next training; never fatal
            return self._stacks[key]

    def put(self, key: str, stack: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, stack.astype(np.uint8), allow_pickle=False)
        ensure_writable_dir(self.folder)
        atomic_write_bytes(self.folder / f"{key}.npy", buffer.getvalue())
        with self.lock:
            self._stacks[key] = stack.astype(np.uint8)
