"""Turn every supported mask layout into one index mask: 0 = background, 1..K = the dataset's classes.

Layouts (`MaskLayout.kind`):
- ``binary``: one class; any non-zero pixel ({0,1} or {0,255}) is the class.
- ``index``: pixel values are class values (``classes[i].value``), e.g. FFA's 0/1/2 with classes.json.
- ``color``: RGB colour per class (``classes[i].color``).
- ``folders``: one binary mask per structure in its own sub-folder (``classes[i].folder``), e.g. JSRT.
  Where structures overlap the later class in the class list wins, so list large structures first.
- ``nifti``: a NIfTI label volume whose voxel values are class values, giving (D, H, W) masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samadapt.data.io import read_image
from samadapt.data.volumes import read_volume
from samadapt.errors import UserError

LAYOUTS = ("binary", "index", "color", "folders", "nifti")


@dataclass(frozen=True)
class ClassInfo:
    """One foreground class. Its output index is its position in the class list + 1."""

    name: str
    value: int | None = None  # pixel value in index / nifti masks
    color: tuple[int, int, int] | None = None  # RGB in colour masks
    folder: str | None = None  # sub-folder name in the folders layout

    def to_dict(self) -> dict:
        out: dict = {"name": self.name}
        if self.value is not None:
            out["value"] = int(self.value)
        if self.color is not None:
            out["color"] = [int(c) for c in self.color]
        if self.folder is not None:
            out["folder"] = self.folder
        return out


@dataclass(frozen=True)
class MaskLayout:
    kind: str
    classes: tuple[ClassInfo, ...]

    def __post_init__(self):
        if self.kind not in LAYOUTS:
            raise UserError(f"unknown mask layout {self.kind!r}; expected one of {', '.join(LAYOUTS)}")
        if not self.classes:
            raise UserError("a labelled dataset needs at least one class")
        if len(self.classes) > 255:
            raise UserError(f"at most 255 classes are supported, got {len(self.classes)}")
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise UserError(f"class names must be unique: {names}")
        for info in self.classes:
            needed = {"index": "value", "nifti": "value", "color": "color", "folders": "folder"}.get(self.kind)
            if needed and getattr(info, needed) is None:
                raise UserError(f"class {info.name!r} needs a {needed!r} for the {self.kind} mask layout")
        if self.kind == "binary" and len(self.classes) != 1:
            raise UserError("the binary mask layout has exactly one class")

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]


@dataclass
class DecodedMask:
    """An index mask plus anything in the file that the class list does not explain."""

    mask: np.ndarray  # (H, W) or (D, H, W) uint8
    unknown_values: tuple = ()  # raw values / colours not in the class list (mapped to background)
    overlap_pixels: int = 0  # folders layout: pixels claimed by more than one structure


def _grey(array: np.ndarray) -> np.ndarray:
    """Masks saved as RGB with grey content (all channels equal) are read as grey."""
    if array.ndim == 3:
        if array.shape[-1] in (2, 4):
            array = array[..., :-1]
        if array.shape[-1] == 1 or (np.array_equal(array[..., 0], array[..., 1])
                                    and np.array_equal(array[..., 0], array[..., -1])):
            return array[..., 0]
        raise ValueError("colour")
    return array


def _binary(array: np.ndarray, path: Path) -> np.ndarray:
    try:
        return _grey(array) > 0
    except ValueError:
        raise UserError("binary mask has colour pixels (use the color layout)", path) from None


def _map_values(raw: np.ndarray, classes: tuple[ClassInfo, ...]) -> DecodedMask:
    if raw.dtype.kind == "f":
        if not np.array_equal(raw, np.round(raw)):
            raise ValueError("non-integer label values")
        raw = raw.astype(np.int64)
    lookup_values = np.array([c.value for c in classes], dtype=np.int64)
    present = np.unique(raw)
    unknown = tuple(int(v) for v in present if v != 0 and v not in lookup_values)
    out = np.zeros(raw.shape, dtype=np.uint8)
    for index, value in enumerate(lookup_values, start=1):
        out[raw == value] = index
    return DecodedMask(out, unknown)


def decode_mask(paths: tuple[Path, ...] | list[Path], layout: MaskLayout) -> DecodedMask:
    """Read a case's mask file(s) and convert to an index mask.

    Args:
        paths: one file, or for the folders layout one file per class in class order (a missing
            structure is `None` and stays background).
        layout: how the files encode the classes.
    Returns:
        `DecodedMask` with `mask` (H, W) or (D, H, W) uint8; values outside the class list become 0
        and are listed in `unknown_values` so `data check` can report them.
    """
    kind = layout.kind
    if kind == "folders":
        if len(paths) != len(layout.classes):
            raise UserError(f"expected {len(layout.classes)} structure masks, got {len(paths)}")
        out = None
        claimed = None
        for index, path in enumerate(paths, start=1):
            if path is None:
                continue
            fg = _binary(read_image(path, keep_indices=True), path)
            if out is None:
                out = np.zeros(fg.shape, dtype=np.uint8)
                claimed = np.zeros(fg.shape, dtype=np.uint8)
            elif fg.shape != out.shape:
                raise UserError(f"structure mask size {fg.shape} differs from the case's other masks {out.shape}", path)
            out[fg] = index
            claimed += fg
        if out is None:
            raise UserError("case has no structure masks")
        return DecodedMask(out, (), int((claimed > 1).sum()))

    (path,) = paths
    path = Path(path)
    if kind == "nifti":
        data = read_volume(path).data
        try:
            return _map_values(data, layout.classes)
        except ValueError as exc:
            raise UserError(f"label volume has {exc}", path) from None
    array = read_image(path, keep_indices=True)
    if kind == "binary":
        return DecodedMask(_binary(array, path).astype(np.uint8))
    if kind == "index":
        try:
            return _map_values(_grey(array), layout.classes)
        except ValueError as exc:
            raise UserError(f"index mask has {exc} (use the color layout for RGB masks)", path) from None
    # colour layout
    if array.ndim != 3 or array.shape[-1] < 3:
        raise UserError("colour mask must be an RGB image", path)
    rgb = array[..., :3].astype(np.int32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    out = np.zeros(packed.shape, dtype=np.uint8)
    known = {0}
    for index, info in enumerate(layout.classes, start=1):
        r, g, b = (int(c) for c in info.color)
        key = (r << 16) | (g << 8) | b
        known.add(key)
        out[packed == key] = index
    unknown = tuple(
        (int(v) >> 16, (int(v) >> 8) & 255, int(v) & 255) for v in np.unique(packed) if int(v) not in known
    )
    return DecodedMask(out, unknown)


def load_index_mask(paths, layout: MaskLayout, strict: bool = True) -> np.ndarray:
    """Index mask (H, W) or (D, H, W) uint8; with `strict`, unknown label values are an error."""
    decoded = decode_mask(paths, layout)
    if strict and decoded.unknown_values:
        name = next((p for p in paths if p is not None), None)
        shown = ", ".join(str(v) for v in decoded.unknown_values[:8])
        raise UserError(f"mask has label values outside the class list: {shown}", name)
    return decoded.mask


def remap_classes(mask: np.ndarray, source: list[str], target: list[str]) -> np.ndarray:
    """Re-index a mask from class order `source` to `target` (names); classes not in `target` -> 0."""
    if list(source) == list(target):
        return mask
    lut = np.zeros(256, dtype=np.uint8)
    for index, name in enumerate(source, start=1):
        if name in target:
            lut[index] = target.index(name) + 1
    return lut[mask]
