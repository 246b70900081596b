"""Propose a dataset description by looking at a folder (`samadapt data init`).

The proposal is a starting point the user reviews: folder roles come from common names (images,
imagesTr, masks, labelsTr, 1st_manual...), the mask layout and classes from a few sample masks,
class names from a `classes.json` or a Decathlon `dataset.json` when present, and the patient id
from `<patient>-<frame>` style file names when several files share a prefix.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from samadapt.data.io import file_stem, is_image_file, is_volume_file, list_files, read_image
from samadapt.data.volumes import read_volume
from samadapt.data.masks import ClassInfo, MaskLayout
from samadapt.data.spec import DatasetSpec
from samadapt.errors import UserError

IMAGE_DIR_NAMES = ("images", "imagesTr", "image", "img", "imgs", "scans", "volumes", "frames")
MASK_DIR_NAMES = ("masks", "labelsTr", "labels", "label", "1st_manual", "manual", "gt", "groundtruth",
                  "ground_truth", "annotations", "segmentations", "mask")
FOV_DIR_NAMES = ("mask", "fov", "roi")
PREFERRED_SUBFOLDERS = ("labeled", "labelled", "training", "train", "trainval")
ID_REGEX_CANDIDATES = (r"^(?P<id>\d+)", r"^(?P<id>[^_]+)_", r"^(?P<id>[^-]+)-", r"^(?P<id>[^_.]+)")
MODALITY_HINTS = (("fa", ("ffa", "fa", "angio", "angiography", "fluorescein")), ("fundus", ("drive", "fundus", "retina")),
                  ("xray", ("jsrt", "xray", "x-ray", "cxr", "chest", "radiograph")), ("ct", ("ct",)),
                  ("mri", ("mri", "mr", "t1", "t2", "hippocampus", "brain")))
GENERIC_NAMES = {"labeled", "labelled", "training", "train", "data", "trainval", "images", "imagestr"}
SAMPLE = 6


def _has_files(folder: Path) -> bool:
    return any(is_image_file(p) or is_volume_file(p) for p in folder.iterdir() if p.is_file())


def _structure_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and _has_files(p))


def _named(folder: Path, names) -> list[Path]:
    subdirs = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    return [subdirs[n.lower()] for n in names if n.lower() in subdirs]


def _find_pair(folder: Path, depth: int = 0) -> tuple[Path, Path | None, Path | None] | None:
    """(images, masks, fov) folders under `folder`, or None."""
    images = next((p for p in _named(folder, IMAGE_DIR_NAMES) if _has_files(p)), None)
    if images is not None:
        candidates = [p for p in _named(folder, MASK_DIR_NAMES) if p != images and (_has_files(p) or _structure_folders(p))]
        masks = candidates[0] if candidates else None
        fov = next((p for p in candidates[1:] if p.name.lower() in FOV_DIR_NAMES), None)
        return images, masks, fov
    if _has_files(folder):
        return folder, None, None
    if depth >= 2:
        return None
    subdirs = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: (p.name.lower() not in PREFERRED_SUBFOLDERS, p.name))
    fallback = None
    for sub in subdirs:
        found = _find_pair(sub, depth + 1)
        if found and found[1] is not None:
            return found
        fallback = fallback or found
    return fallback


def _best_id_regex(image_files: list[Path], mask_files: list[Path]) -> str | None:
    image_stems = {file_stem(p) for p in image_files}
    mask_stems = {file_stem(p) for p in mask_files}
    if len(image_stems & mask_stems) >= 0.5 * max(1, min(len(image_stems), len(mask_stems))):
        return None
    best, best_matches = None, 0
    for pattern in ID_REGEX_CANDIDATES:
        regex = re.compile(pattern)

        def keys(stems):
            return [m.group("id") for m in map(regex.search, stems) if m]

        image_keys = keys(image_stems)
        if len(set(image_keys)) != len(image_stems):  # ids must stay unique per image
            continue
        matches = len(set(image_keys) & set(keys(mask_stems)))
        if matches > best_matches:
            best, best_matches = pattern, matches
    return best


def _patient_regex(image_files: list[Path]) -> str | None:
    stems = [file_stem(p) for p in image_files]
    for sep in ("-", "_"):
        pattern = rf"^(?P<patient>[^{sep}]+){sep}"
        matched = [re.match(pattern, s) for s in stems]
        if not all(matched):
            continue
        patients = {m.group("patient") for m in matched}
        if 1 < len(patients) < len(stems):  # several frames per patient, yet more than one patient
            return pattern
    return None


def _guess_modality(folder: Path, volumes: bool) -> str:
    words = {w for part in folder.resolve().parts for w in re.split(r"[^a-z0-9]+", part.lower()) if w}
    for modality, hints in MODALITY_HINTS:
        if words & set(hints):
            return modality
    return "mri" if volumes else "unknown"


def _dataset_name(folder: Path) -> str:
    for part in reversed(folder.resolve().parts):
        if part.lower() not in GENERIC_NAMES:
            return re.sub(r"[^A-Za-z0-9_.-]+", "_", part) or "dataset"
    return "dataset"


def _class_names_file(*folders: Path) -> dict[int, str] | None:
    """Class names from a classes.json ({"1": "BRVO"}) or a Decathlon dataset.json ("labels")."""
    for folder in folders:
        for name in ("classes.json", "dataset.json"):
            path = folder / name
            if not path.is_file():
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            data = data.get("labels", data) if isinstance(data, dict) else None
            if isinstance(data, dict):
                try:
                    return {int(k): str(v) for k, v in data.items()}
                except (TypeError, ValueError):
                    continue
    return None


def _sample(files: list[Path]) -> list[Path]:
    if len(files) <= SAMPLE:
        return files
    picks = np.linspace(0, len(files) - 1, SAMPLE).round().astype(int)
    return [files[i] for i in picks]


def _infer_layout(images: Path, masks: Path, volumes: bool) -> tuple[MaskLayout, list[Path]]:
    names = _class_names_file(masks, masks.parent, masks.parent.parent) or {}
    structures = _structure_folders(masks)
    if structures and not _has_files(masks):
        # Draw large structures first so small ones (clavicles over lungs) stay visible on top.
        def mean_fraction(folder: Path) -> float:
            return float(np.mean([(np.asarray(read_image(p)) > 0).mean() for p in _sample(list_files(folder))]))

        ordered = sorted(structures, key=lambda p: (-mean_fraction(p), p.name))
        classes = tuple(ClassInfo(p.name, folder=p.name) for p in ordered)
        return MaskLayout("folders", classes), list_files(ordered[0])

    files = list_files(masks, volumes=volumes)
    if not files:
        raise UserError("no mask files found", masks)
    if volumes:
        values = sorted({int(v) for p in _sample(files) for v in np.unique(read_volume(p).data) if v != 0})
        values = sorted(set(values) | {k for k in names if k != 0})
        return MaskLayout("nifti", tuple(ClassInfo(names.get(v, f"class_{v}"), value=v) for v in values)), files

    arrays = [read_image(p, keep_indices=True) for p in _sample(files)]
    colour = [a for a in arrays if a.ndim == 3 and not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2]))]
    if colour:
        colours = sorted({tuple(int(c) for c in px) for a in colour for px in np.unique(a[..., :3].reshape(-1, 3), axis=0)} - {(0, 0, 0)})
        if len(colours) > 50:
            raise UserError(f"colour masks have {len(colours)} colours: not a label image?", masks)
        return MaskLayout("color", tuple(ClassInfo(f"class_{i}", color=c) for i, c in enumerate(colours, 1))), files
    values = sorted({int(v) for a in arrays for v in np.unique(a if a.ndim == 2 else a[..., 0])} - {0})
    known = {k for k in names if k != 0}
    if known:
        values = sorted(set(values) | known)
        return MaskLayout("index", tuple(ClassInfo(names.get(v, f"class_{v}"), value=v) for v in values)), files
    if values in ([1], [255], []):
        return MaskLayout("binary", (ClassInfo("foreground"),)), files
    if len(values) > 50:
        raise UserError(f"masks have {len(values)} distinct values: not a label image?", masks)
    return MaskLayout("index", tuple(ClassInfo(f"class_{v}", value=v) for v in values)), files


def propose_description(folder: str | Path, masks: str | Path | None = None) -> DatasetSpec:
    """Inspect `folder` (and optionally an explicit masks folder) and return a `DatasetSpec`."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise UserError("not a folder", folder)
    if masks is not None:
        masks = Path(masks).resolve()
        if not masks.is_dir():
            raise UserError("masks folder not found", masks)
        images, fov = folder, None
    else:
        found = _find_pair(folder)
        if found is None:
            raise UserError("no images or volumes found (looked for images/, imagesTr/, masks/, labelsTr/...)", folder)
        images, masks, fov = found
    image_files = list_files(images)
    volumes = bool(image_files) and all(is_volume_file(p) for p in image_files)
    if not volumes:
        image_files = [p for p in image_files if is_image_file(p)]
    layout, mask_files, id_regex = None, [], None
    if masks is not None:
        layout, mask_files = _infer_layout(images, masks, volumes)
        id_regex = _best_id_regex(image_files, mask_files)
    return DatasetSpec(
        name=_dataset_name(folder), images=images, modality=_guess_modality(folder, volumes),
        dims="3d" if volumes else "2d", masks=masks, layout=layout, patient_regex=_patient_regex(image_files),
        id_regex=id_regex, slice_axis=2, fov=fov,
    )


def description_yaml(spec: DatasetSpec, relative_to: Path | None = None) -> str:
    """YAML text of a description; folders relative to `relative_to` (absolute when None)."""
    import yaml

    header = "# dataset description proposed by `samadapt data init`; review the classes and their order\n"
    return header + yaml.safe_dump(spec.to_dict(relative_to), sort_keys=False, allow_unicode=True)
