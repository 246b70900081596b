"""Labels out of the studio: label files in the input's geometry and a dataset description.

`write_labels` writes the edited labels of some cases the way a `samadapt` dataset stores masks
(3D: `<stem>.nii.gz` label volumes on the input's voxel grid with its affine; 2D: `<stem>.png`
index masks); training rounds and the export both use it. `export` adds the predictions, an
`images/` folder of links to the labelled images (so the dataset holds only labelled cases, and no
corrupt file of FOLDER) and a `dataset.yaml` that `samadapt data check`, `samadapt finetune` and
`samadapt fewshot` read.
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
    out = []
    for item in cases:
        case = item.case
        path = folder / f"{item.key}{label_suffix(case.dims)}"  # the key: two folders may share a file name
        _write_case_labels(path, case, studio.edits(item.id).labels)
        out.append(Case(case.id, case.patient, case.image, (path,), layout(case.dims, studio.classes), case.dims,
                        case.slice_axis, None, case.intensity))
    return out


def _description(studio, dims: str) -> str:
    import yaml

    first = next(c.case for c in studio.cases if c.case is not None and c.dims == dims)
    data = {"name": f"studio-{studio.root.name}", "modality": "unknown", "dims": dims, "images": "images",
            "masks": "labels", "mask_layout": "nifti" if dims == "3d" else "index",
            "classes": [{"name": n, "value": v} for v, n in enumerate(studio.classes, start=1)]}
    if dims == "3d":
        data.update(slice_axis=first.slice_axis, intensity=first.intensity)
    return yaml.safe_dump(data, sort_keys=False)


def _link_images(folder: Path, images: list[Path]) -> None:
    """`folder` holds exactly one relative symlink per labelled image (a dataset of the labelled
    cases only, without copying them): a stale or unlabelled one is removed."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {image.name: image for image in images}
    for entry in folder.iterdir():
        if entry.is_symlink() and entry.name not in wanted:
            entry.unlink()
    for name, image in wanted.items():
        link = folder / name
        target = os.path.relpath(image.resolve(), folder.resolve())
        if link.is_symlink() and os.readlink(link) == target:
            continue
        try:
            link.unlink(missing_ok=True)
            link.symlink_to(target, target_is_directory=image.is_dir())
        except OSError as exc:
            raise UserError(f"cannot link the exported dataset's images ({exc.strerror})", link) from None


def _remove_stale(folder: Path, keep: list[str]) -> None:
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.is_file() and entry.name not in keep:
                entry.unlink()


def export(studio) -> dict:
    """Write STATE/export/: labels/ and predictions/ (staged: complete or absent), images/ (links to
    the labelled images), then dataset.yaml, last."""
    from samadapt.data.io import file_stem
    from samadapt.engine.atomic import atomic_write_text, staged_dir

    labelled = [c for c in studio.cases if c.case is not None and studio.edits(c.id).labelled_slices]
    if not labelled:
        raise UserError("nothing to export yet: label a slice first")
    kinds = {c.dims for c in labelled}
    if len(kinds) > 1:
        raise UserError("labels on both 2D images and volumes: a dataset holds one kind; export needs one")
    dims = kinds.pop()
    if len({c.case.image.name for c in labelled}) < len(labelled):
        raise UserError("two labelled images share a file name; a dataset folder holds one of each")
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
    for part in ("labels", "predictions"):
        _remove_stale(final / part, [Path(p).name for p in written[part]])
    _link_images(final / "images", [c.case.image for c in labelled])
    atomic_write_text(final / "dataset.yaml", _description(studio, dims))
    return {"folder": str(final), "dataset": str(final / "dataset.yaml"), **written}
