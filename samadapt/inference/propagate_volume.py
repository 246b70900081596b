"""`samadapt propagate` on real inputs: a NIfTI volume or a folder of 2D frames, prompts on key
slices, and a label volume (or label PNGs) written back in the input's geometry.

Slices are taken along the volume's last axis (`data[:, :, z]`, as the few-shot commands do); in
a slice, x is the column and y the row of that 2D array, as in `samadapt predict`. Each slice goes
through the same letterbox (aspect kept, zero padding) as every other samadapt command; volume
intensities are clipped to the volume's own 0.5-99.5 percentiles first.

Everything the user gave is checked before the model is built, and the output is written
atomically once every slice is done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from samadapt.data.io import is_image_file, is_volume_file, list_files, read_image, write_mask_png
from samadapt.data.preprocess import (
    Letterbox, clip_percentiles, letterbox_mask, letterbox_unit_image, normalize, restore_logits,
    to_three_channels, unit_image,
)
from samadapt.data.volumes import read_volume, write_label_volume
from samadapt.engine.atomic import staged_dir
from samadapt.errors import UserError

BOX_OBJECT = 1  # label value of the object prompted with --box / --point


@dataclass
class Stack:
    """The slices to segment: a volume's (X, Y, Z) data scaled to [0, 1], or a folder of frames."""

    source: Path
    volume: object | None = None  # samadapt.data.volumes.Volume
    unit_volume: np.ndarray | None = None  # (H, W, N) float32 in [0, 1]
    frame_paths: list[Path] = field(default_factory=list)
    frame_shape: tuple[int, int] = (0, 0)

    @property
    def depth(self) -> int:
        return self.unit_volume.shape[2] if self.unit_volume is not None else len(self.frame_paths)

    @property
    def plane(self) -> tuple[int, int]:
        return self.unit_volume.shape[:2] if self.unit_volume is not None else self.frame_shape

    def unit_slice(self, index: int) -> np.ndarray:
        """(H, W, 3) float32 in [0, 1]."""
        if self.unit_volume is not None:
            return to_three_channels(self.unit_volume[:, :, index])
        return unit_image(read_image(self.frame_paths[index]))


def read_stack(path: str | Path) -> Stack:
    """A NIfTI volume or a folder of 2D frames (sorted by name, all of one size)."""
    path = Path(path)
    if path.is_dir():
        frames = list_files(path, volumes=False)
        if len(frames) < 2:
            raise UserError(f"needs at least 2 frames to propagate through, found {len(frames)} images", path)
        shapes = {}
        for frame in frames:
            shapes.setdefault(read_image(frame).shape[:2], frame)
        if len(shapes) > 1:
            (a, pa), (b, pb) = list(shapes.items())[:2]
            raise UserError(f"frames differ in size: {pa.name} is {a[0]}x{a[1]}, {pb.name} is {b[0]}x{b[1]}", path)
        return Stack(path, frame_paths=frames, frame_shape=next(iter(shapes)))
    if is_image_file(path):
        raise UserError("is a 2D image; propagate needs a volume (.nii, .nii.gz) or a folder of 2D frames", path)
    if not path.exists():
        raise UserError("input not found", path)
    if not is_volume_file(path):
        raise UserError("propagate reads a NIfTI volume (.nii, .nii.gz) or a folder of 2D frames", path)
    volume = read_volume(path, expect_3d=True)
    if volume.shape[2] < 2:
        raise UserError(f"volume of shape {volume.shape} has a single slice along its last axis", path)
    return Stack(path, volume=volume, unit_volume=clip_percentiles(volume.data))


@dataclass
class KeyPrompt:
    """One object on one key slice, on the slice's own grid: a mask (H, W) bool, or points
    (P, 2) as (x, y) with labels (P,) (1 positive, 0 negative, 2/3 the corners of a box)."""

    obj_id: int
    slice: int
    mask: np.ndarray | None = None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None


def _check_slice(z: int, stack: Stack, what: str) -> int:
    if not 0 <= z < stack.depth:
        raise UserError(f"{what}: slice {z} is outside the {stack.depth} slices of {stack.source} "
                        f"(0..{stack.depth - 1})")
    return z


def _read_labels(path: Path) -> np.ndarray:
    if is_volume_file(path):
        data = read_volume(path, expect_3d=False).data
    else:
        data = read_image(path, keep_indices=True)
    data = np.asarray(data)
    if data.ndim not in (2, 3):
        raise UserError(f"labels must be a 2D label image or a 3D label volume, found shape {data.shape}", path)
    if data.dtype.kind == "f" and not np.array_equal(data, np.round(data)):
        raise UserError("labels must be integers (class values), found fractions", path)
    if data.size and (data.min() < 0 or data.max() > 255):
        raise UserError(f"label values must be in 0..255, found {data.min()}..{data.max()}", path)
    return data.astype(np.uint8)


def prompts_from_labels(path: str | Path, stack: Stack, key_slices: Sequence[int] = ()) -> tuple[list, dict]:
    """Key prompts (one object per class) from a label volume shaped like the input, or from a 2D
    label image for the one `--key-slice`. Returns the prompts and {slice: (H, W) labels}."""
    path = Path(path)
    data = _read_labels(path)
    plane = tuple(stack.plane)
    if data.shape[:2] != plane:
        raise UserError(f"labels of in-plane shape {data.shape[0]}x{data.shape[1]} do not fit the input's "
                        f"{plane[0]}x{plane[1]} slices", path)
    for z in key_slices:
        _check_slice(z, stack, f"--key-slice {z}")
    if data.ndim == 2:
        if len(key_slices) != 1:
            raise UserError("a 2D label image prompts one slice: give exactly one --key-slice Z", path)
        slices = {key_slices[0]: data}
    else:
        if data.shape[2] != stack.depth:
            raise UserError(f"label volume has {data.shape[2]} slices, the input {stack.depth}", path)
        chosen = list(key_slices) or [z for z in range(data.shape[2]) if data[:, :, z].any()]
        slices = {z: data[:, :, z] for z in chosen}
        classes = set(np.unique(data).tolist()) - {0}
        prompted = set().union(*(set(np.unique(s).tolist()) for s in slices.values())) - {0}
        if classes - prompted:
            shown = ", ".join(str(c) for c in sorted(classes - prompted))
            raise UserError(f"class(es) {shown} have no pixels on the key slice(s) "
                            f"{', '.join(map(str, sorted(slices)))}", path)
    for z, labels in slices.items():
        if not labels.any():
            raise UserError(f"key slice {z} has no labelled pixels", path)
    return key_prompts(slices), slices


def key_prompts(slices: dict[int, np.ndarray]) -> list[KeyPrompt]:
    """One mask prompt per class on each key slice of {slice: (H, W) labels}."""
    return [KeyPrompt(int(c), z, mask=labels == c) for z, labels in sorted(slices.items())
            for c in np.unique(labels) if c != 0]


def _check_xy(x: float, y: float, stack: Stack, what: str, inclusive: bool = False) -> None:
    h, w = stack.plane
    inside = (0 <= x <= w and 0 <= y <= h) if inclusive else (0 <= x < w and 0 <= y < h)
    if not inside:
        raise UserError(f"{what} lies outside the {w}x{h} slices (x 0..{w}, y 0..{h})")


def prompts_from_clicks(boxes: Sequence[tuple], points: Sequence[tuple], stack: Stack) -> list[KeyPrompt]:
    """One object (label 1) from `--box Z X0 Y0 X1 Y1` and `--point Z X Y LABEL` prompts."""
    per_slice: dict[int, tuple[list, list]] = {}
    seen_box = set()
    for z, x0, y0, x1, y1 in boxes:
        what = f"--box {z} {x0:g} {y0:g} {x1:g} {y1:g}"
        _check_slice(int(z), stack, what)
        if not (x0 < x1 and y0 < y1):
            raise UserError(f"{what}: needs x0 < x1 and y0 < y1")
        _check_xy(x0, y0, stack, what, True)
        _check_xy(x1, y1, stack, what, True)
        if z in seen_box:
            raise UserError(f"{what}: slice {z} has a box already (one object, one box per slice)")
        seen_box.add(z)
        coords, labels = per_slice.setdefault(int(z), ([], []))
        coords[:0], labels[:0] = [(x0, y0), (x1, y1)], [2, 3]  # SAM2 takes the box corners first
    for z, x, y, label in points:
        what = f"--point {z} {x:g} {y:g} {label}"
        _check_slice(int(z), stack, what)
        if label not in (0, 1):
            raise UserError(f"{what}: the label is 1 (on the object) or 0 (not on it)")
        _check_xy(x, y, stack, what)
        coords, labels = per_slice.setdefault(int(z), ([], []))
        coords.append((x, y))
        labels.append(int(label))
    for z, (_, labels) in per_slice.items():
        if not any(v in (1, 2) for v in labels):
            raise UserError(f"slice {z} has only negative points: add a --box or a --point with label 1")
    return [KeyPrompt(BOX_OBJECT, z, points=np.asarray(c, np.float64), labels=np.asarray(lab, np.int32))
            for z, (c, lab) in sorted(per_slice.items())]


class ModelFrames(Sequence):
    """The stack as the model's normalised (3, S, S) inputs, made on demand (a volume is never held
    twice at the model's resolution)."""

    def __init__(self, stack: Stack, size: int):
        self.stack, self.size = stack, size
        self.box = Letterbox.fit(*stack.plane, size)

    def __len__(self) -> int:
        return self.stack.depth

    def __getitem__(self, index: int) -> torch.Tensor:
        square, box = letterbox_unit_image(self.stack.unit_slice(index), self.size)
        return normalize(square, box)


def model_prompt(prompt: KeyPrompt, box: Letterbox):
    """A `FramePrompt` in model-input pixels for a key prompt on the slice's grid."""
    from samadapt.inference.propagate import FramePrompt

    if prompt.mask is not None:
        return FramePrompt(prompt.obj_id, prompt.slice, mask=letterbox_mask(prompt.mask, box).float())
    points = torch.from_numpy(box.to_model_xy(prompt.points)).float()
    return FramePrompt(prompt.obj_id, prompt.slice, points=points, labels=torch.from_numpy(prompt.labels))


def propagated_labels(model, frames: Sequence[torch.Tensor], queries: list, box: Letterbox, plane: tuple[int, int], *,
                      first: int = 0, stop_when_absent: bool = True, progress=None) -> np.ndarray:
    """(N - first, H, W) uint8 labels of frames `first`..N-1, all on `box`'s grid of the (H, W)
    `plane`, from propagating `queries` (`FramePrompt`s in model pixels) through `frames`. Each
    pixel takes the object with the highest positive mask logit; an object whose score says absent
    on a frame it was not prompted on leaves that frame empty. Frames before `first` only feed the
    memory (e.g. labelled slices of other images)."""
    from samadapt.inference.propagate import propagate

    h, w = plane
    depth = len(frames) - first
    best = np.full((depth, h, w), -np.inf, np.float32)
    labels = np.zeros((depth, h, w), np.uint8)
    for result in propagate(model.hf, frames, queries, stop_when_absent=stop_when_absent, progress=progress):
        if result.frame < first or (result.score <= 0 and not result.prompted):
            continue
        logits = restore_logits(result.logits.float(), box).numpy()  # (H, W)
        slot = result.frame - first
        better = logits > best[slot]
        best[slot][better] = logits[better]
        labels[slot][better] = result.obj_id
    labels[best <= 0] = 0
    return labels


def segment_stack(model, stack: Stack, prompts: list[KeyPrompt], label_slices: dict, *,
                  stop_when_absent: bool = True, progress=None) -> np.ndarray:
    """(N, H, W) uint8 labels: each pixel takes the object with the highest positive mask logit;
    key slices given as labels come back exactly as given."""
    frames = ModelFrames(stack, model.image_size)
    return segment_frames(model, frames, frames.box, tuple(stack.plane), prompts, label_slices,
                          stop_when_absent=stop_when_absent, progress=progress)


def segment_frames(model, frames: Sequence[torch.Tensor], box: Letterbox, plane: tuple[int, int],
                   prompts: list[KeyPrompt], label_slices: dict, *, stop_when_absent: bool = True,
                   progress=None) -> np.ndarray:
    """`segment_stack` on any N model-input frames (3, S, S) letterboxed by `box` from (H, W) `plane`."""
    queries = [model_prompt(p, box) for p in prompts]
    labels = propagated_labels(model, frames, queries, box, plane, stop_when_absent=stop_when_absent,
                               progress=progress)
    for z, given in label_slices.items():
        labels[z] = given
    return labels


def check_output(out: str | Path, stack: Stack) -> Path:
    """Refuse an output the result cannot be written to, before any work."""
    from samadapt.data.io import file_suffix
    from samadapt.engine.atomic import check_output_dir

    out = Path(out)
    if stack.volume is not None:
        if file_suffix(out) not in (".nii", ".nii.gz"):
            raise UserError("the label volume is written as .nii or .nii.gz", out)
        if out.is_dir():
            raise UserError("output path is a folder; give a file name ending in .nii.gz", out)
        check_output_dir(out.parent if out.parent != Path("") else Path("."))
        return out
    return check_output_dir(out)


def write_labels(out: Path, labels: np.ndarray, stack: Stack) -> list[Path]:
    """The label volume in the input's space, or one label PNG per frame (<stem>.png)."""
    if stack.volume is not None:
        write_label_volume(out, np.moveaxis(labels, 0, 2), like=stack.volume)
        return [out]
    written = []
    with staged_dir(out) as stage:
        for frame, path in zip(labels, stack.frame_paths):
            write_mask_png(stage / f"{path.stem}.png", frame)
            written.append(out / f"{path.stem}.png")
    return written
