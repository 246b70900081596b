"""The cases the studio shows: every image and volume of FOLDER (or of a dataset description),
each either readable or listed with the one-line error that makes it unreadable.

Orientation. Labels and model inputs use the few-shot items' orientation (`samadapt.fewshot.items`:
a 2D image as stored, a volume slice `np.take(volume, z, axis=slice_axis)` of the canonical RAS+
array). The browser shows a volume slice transposed and flipped (`to_display`) so that anterior
and superior are up and the patient's right is on the right (neurological convention); the
server converts both ways, so the browser never needs to know.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from samadapt.data.dataset import Case
from samadapt.errors import UserError
from samadapt.studio.paths import is_inside

PLANES = ("axial", "coronal", "sagittal")  # 3D: slices along canonical axes 2, 1 and 0


@dataclass
class StudioCase:
    """One listed image or volume. `case` is the dataset's `Case` (None when unreadable)."""

    id: str
    path: Path
    case: Case | None
    error: str | None = None
    shape: tuple[int, ...] = ()

    @property
    def dims(self) -> str:
        return self.case.dims if self.case is not None else "?"

    @property
    def key(self) -> str:
        """A file-name-safe name for the case's state (its id may hold any character)."""
        return hashlib.sha256(self.id.encode()).hexdigest()[:24]

    def summary(self) -> dict:
        out = {"id": self.id, "name": self.path.name, "dims": self.dims, "error": self.error,
               "labelled": bool(self.case is not None and self.case.labeled)}
        if self.error is None:
            out["shape"] = list(self.shape)
        return out


def _header_shape(case: Case) -> tuple[int, ...]:
    if case.dims == "3d":
        from samadapt.data.volumes import read_volume_shape

        shape = read_volume_shape(case.image)
        if len(shape) != 3:
            raise UserError(f"expected a 3D volume, found shape {shape}", case.image)
        return shape
    return tuple(case.load_image().shape[:2])


def scan_cases(root: Path, data: Path | None, class_names: list[str]) -> tuple[list[StudioCase], list[str]]:
    """(cases, class names): from `data` or FOLDER's own description when there is one, otherwise
    every image and volume file of FOLDER (unlabelled, classes from `class_names`)."""
    from samadapt.data.dataset import find_description, load_dataset
    from samadapt.data.io import file_stem, is_volume_file, list_files

    description = data if data is not None else find_description(root)
    if description is not None:
        dataset = load_dataset(description)
        cases, classes = dataset.cases, dataset.class_names or class_names
        allowed = [root, dataset.spec.images] + [p for p in (dataset.spec.masks,) if p is not None]
    else:
        files = list_files(root, volumes=None)
        cases = [Case(file_stem(f), file_stem(f), f, dims="3d" if is_volume_file(f) else "2d") for f in files]
        classes, allowed = class_names, [root]
    listed, seen = [], set()
    for case in cases:
        item = StudioCase(case.id, Path(case.image), case)
        if case.id in seen:
            item.case, item.error = None, f"another file has the case id {case.id!r}"
        elif not any(is_inside(Path(case.image), folder) for folder in allowed):
            item.case, item.error = None, "leads outside the studio folder (symlink): not read"
        else:
            try:
                item.shape = _header_shape(case)
            except UserError as exc:
                item.case, item.error = None, str(exc)
            except Exception as exc:  # a foreign file the readers do not know: listed, never fatal
                item.case, item.error = None, f"{case.image.name}: unreadable ({type(exc).__name__}: {exc})"
        seen.add(case.id)
        listed.append(item)
    return listed, list(classes)


@dataclass
class CaseImage:
    """A readable case in memory: `stack` (A, B, N) float32 raw intensities with the N items along
    the last axis (a 2D image: N = 1, grey), and the scaled copy the model sees."""

    case: Case
    stack: np.ndarray
    image2d: np.ndarray | None = field(default=None, repr=False)  # 2D: the image as stored
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # mm along the stack's axes (2D: pixels)

    @property
    def slices(self) -> int:
        return self.stack.shape[-1]

    @property
    def item_hw(self) -> tuple[int, int]:
        return tuple(self.stack.shape[:2])

    @cached_property
    def scaled(self) -> np.ndarray:
        from samadapt.data.intensity import scale_volume

        return scale_volume(self.stack, self.case.intensity)  # per-volume scaling: the axis order does not matter

    @cached_property
    def window(self) -> tuple[float, float]:
        """A default (low, high) display window: the 0.5 and 99.5 percentiles."""
        low, high = np.percentile(self.stack, [0.5, 99.5])
        return float(low), float(high if high > low else low + 1)

    def unit(self, index: int) -> np.ndarray:
        """(H, W, 3) [0, 1]: item `index` preprocessed as the few-shot cache preprocesses it."""
        from samadapt.data.preprocess import to_three_channels, unit_image

        if self.case.dims != "3d":
            return unit_image(self.image2d)
        return to_three_channels(self.scaled[:, :, index])

    def to_display(self, item: np.ndarray) -> np.ndarray:
        return item if self.case.dims != "3d" else item.T[::-1]

    def from_display(self, shown: np.ndarray) -> np.ndarray:
        return shown if self.case.dims != "3d" else shown[::-1].T

    def display_hw(self) -> tuple[int, int]:
        return self.to_display(np.empty(self.item_hw, dtype=np.uint8)).shape

    def display_to_item(self, row: float, col: float) -> tuple[float, float]:
        """(row, col) on the displayed slice -> (row, col) on the item (model orientation)."""
        if self.case.dims != "3d":
            return row, col
        return col, self.item_hw[1] - row  # display[r, c] = item[c, W - 1 - r]; continuous coordinates

    def plane(self, stack: np.ndarray, plane: str, index: int) -> np.ndarray:
        """A displayed slice of `stack` (the image or a label stack of the same shape)."""
        if plane not in PLANES or (plane != "axial" and self.case.dims != "3d"):
            raise UserError(f"plane {plane!r} is not available for this case")
        axis = _PLANE_AXIS[plane]
        if not 0 <= index < stack.shape[axis]:
            raise UserError(f"slice {index} is outside 0..{stack.shape[axis] - 1} of the {plane} plane")
        cut = np.take(stack, index, axis=axis)
        return cut if self.case.dims != "3d" else cut.T[::-1]


    def pixel_mm(self, plane: str) -> tuple[float, float]:
        """(row, column) pixel size of a displayed slice of `plane`: what keeps its aspect true."""
        if self.case.dims != "3d":
            return 1.0, 1.0
        kept = [a for a in range(3) if a != _PLANE_AXIS[plane]]  # the cut's axes; displayed transposed
        return self.spacing[kept[1]], self.spacing[kept[0]]


_PLANE_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}


def load_case_image(case: Case) -> CaseImage:
    if case.dims == "3d":
        from samadapt.data.volumes import read_volume

        volume = read_volume(case.image)
        order = [a for a in range(3) if a != case.slice_axis] + [case.slice_axis]
        spacing = tuple(float(volume.spacing[a]) for a in order)
        return CaseImage(case, np.moveaxis(np.asarray(volume.data, dtype=np.float32), case.slice_axis, -1),
                         spacing=spacing)
    image = case.load_image()
    grey = image.astype(np.float32) if image.ndim == 2 else image[..., :3].astype(np.float32).mean(axis=-1)
    return CaseImage(case, grey[:, :, None], image)
