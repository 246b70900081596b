"""Labels out of the studio: label files in the input's geometry and a dataset description.

`write_labels` writes the edited labels of some cases the way a `samadapt` dataset stores masks
(3D: `<stem>.nii.gz` label volumes on the input's voxel grid with its affine; 2D: `<stem>.png`
index masks); training rounds and the export both use it. `export` adds the predictions and a
`dataset.yaml` that `samadapt data check`, `samadapt finetune` and `samadapt fewshot` read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samadapt.data.dataset import Case
from samadapt.data.masks import ClassInfo, MaskLayout
from samadapt.errors import UserError

EXPORT_DIR = "export"


@dataclass
class TrainingPlan:
    """Cases with labels to learn from, all of one kind (`dims`), and how many shots they give."""

    dims: str
    cases: list  # StudioCase
    shots: int


def label_suffix(dims: str) -> str:
    return ".nii.gz" if dims == "3d" else ".png"


def _write_case_labels(path: Path, case: Case, stack: np.ndarray) -> None:
    """`stack` (A, B, N) uint8 in the studio's item order -> a label file on the case's own grid."""
    from samadapt.data.io import write_mask_png
    from samadapt.data.volumes import read_volume, write_label_volume

    if case.dims == "3d":
        write_label_volume(path, np.moveaxis(stack, -1, case.slice_axis), read_volume(case.image))
    else:
        write_mask_png(path, stack[:, :, 0])


def layout(dims: str, classes: list[str]) -> MaskLayout:
    infos = tuple(ClassInfo(name, value) for value, name in enumerate(classes, start=1))
    return MaskLayout("nifti" if dims == "3d" else "index", infos)


def write_labels(studio, cases, folder: Path) -> list[Case]:
    """Write the edits of `cases` (StudioCase) into `folder`; returns dataset `Case`s that read them."""
    from samadapt.data.io import file_stem

    out = []
    for item in cases:
        case = item.case
        path = folder / f"{file_stem(case.image)}{label_suffix(case.dims)}"
        _write_case_labels(path, case, studio.edits(item.id).labels)
        out.append(Case(case.id, case.patient, case.image, (path,), layout(case.dims, studio.classes), case.dims,
                        case.slice_axis, None, case.intensity))
    return out


def _description(studio, dims: str, images: Path, stage: Path, final: Path) -> str:
    import yaml

    first = next(c.case for c in studio.cases if c.case is not None and c.dims == dims)
    data = {"name": f"studio-{studio.root.name}", "modality": "unknown", "dims": dims,
            "images": os.path.relpath(images, final), "masks": "labels",
            "mask_layout": "nifti" if dims == "3d" else "index",
            "classes": [{"name": n, "value": v} for v, n in enumerate(studio.classes, start=1)]}
    if dims == "3d":
        data.update(slice_axis=first.slice_axis, intensity=first.intensity)
    return yaml.safe_dump(data, sort_keys=False)


def export(studio) -> dict:
    """Write STATE/export/: labels/, predictions/, dataset.yaml (staged: complete or absent)."""
    from samadapt.data.io import file_stem
    from samadapt.engine.atomic import staged_dir

    labelled = [c for c in studio.cases if c.case is not None and studio.edits(c.id).labelled_slices]
    if not labelled:
        raise UserError("nothing to export yet: label a slice first")
    kinds = {c.dims for c in labelled}
    if len(kinds) > 1:
        raise UserError("labels on both 2D images and volumes: a dataset holds one kind; export needs one")
    dims = kinds.pop()
    folders = {c.case.image.parent for c in labelled}
    if len(folders) > 1:
        raise UserError("labelled images lie in several folders; a dataset description names one")
    final = studio.state_dir / EXPORT_DIR
    written = {"labels": [], "predictions": []}
    with staged_dir(final) as stage:
        for item in labelled:
            name = f"{file_stem(item.case.image)}{label_suffix(dims)}"
            _write_case_labels(stage / "labels" / name, item.case, studio.edits(item.id).labels)
            written["labels"].append(f"labels/{name}")
        for item in studio.cases:
            stack = studio.predictions.get(item.key) if item.case is not None else None
            if stack is not None and item.dims == dims:
                name = f"{file_stem(item.case.image)}_mask{label_suffix(dims)}"
                _write_case_labels(stage / "predictions" / name, item.case, stack)
                written["predictions"].append(f"predictions/{name}")
        (stage / "dataset.yaml").write_text(_description(studio, dims, folders.pop(), stage, final))
    return {"folder": str(final), "dataset": str(final / "dataset.yaml"), **written}
