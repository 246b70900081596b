"""`DatasetSpec`: a parsed dataset description, as read from a file (`dataset.py`) or inferred
from a folder's contents (`infer.py`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from samadapt.data.intensity import DEFAULT_INTENSITY
from samadapt.data.masks import MaskLayout


@dataclass
class DatasetSpec:
    """A parsed description; folders are absolute."""

    name: str
    images: Path
    modality: str = "unknown"
    dims: str = "2d"
    masks: Path | None = None
    layout: MaskLayout | None = None
    patient_regex: str | None = None
    id_regex: str | None = None
    slice_axis: int = 2
    fov: Path | None = None
    source: Path | None = None  # the description file, when there is one
    intensity: str = DEFAULT_INTENSITY  # 3d: how voxel values become [0, 1] (data/intensity.py)

    @property
    def labeled(self) -> bool:
        return self.masks is not None

    @property
    def class_names(self) -> list[str]:
        return self.layout.class_names if self.layout else []

    def to_dict(self, relative_to: Path | None = None) -> dict:
        def where(path: Path | None):
            if path is None:
                return None
            if relative_to is not None:
                return Path(os.path.relpath(path, relative_to)).as_posix()
            return str(path)

        out = {"name": self.name, "modality": self.modality, "dims": self.dims, "images": where(self.images)}
        if self.masks is not None:
            out.update(masks=where(self.masks), mask_layout=self.layout.kind,
                       classes=[c.to_dict() for c in self.layout.classes])
        for key in ("patient_regex", "id_regex"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.dims == "3d":
            out["slice_axis"] = self.slice_axis
            if self.intensity != DEFAULT_INTENSITY:
                out["intensity"] = self.intensity
        if self.fov is not None:
            out["fov"] = where(self.fov)
        return out
