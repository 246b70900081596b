"""Dataset descriptions and the cases they list.

A description is a small YAML or JSON file (the role nnU-Net's dataset.json plays)::

    name: ffa
    modality: fa              # fa, fundus, xray, mri, ct, ...
    dims: 2d                  # or 3d (NIfTI, NRRD, MHA or DICOM volumes, sliced along slice_axis)
    images: labeled/images    # relative to the description file
    masks: labeled/masks      # omit for an unlabeled dataset
    mask_layout: index        # binary | index | color | folders | nifti
    classes:                  # in output order: index 1, 2, ...
      - {name: BRVO, value: 1}
      - {name: NP, value: 2}
    patient_regex: '^(?P<patient>[^-]+)-'   # optional; default: one patient per case
    id_regex: '^(?P<id>\\d+)_'              # optional; pairs images and masks with different names
    slice_axis: 2             # 3d only
    intensity: ct:soft_tissue # 3d only: percentile (default), percentile:1-99, ct:lung, ct:40/400...
    fov: mask                 # optional folder of field-of-view masks

`load_dataset` accepts such a file, a folder holding `dataset.yaml`/`dataset.json`, or a plain
folder (images + masks sub-folders, or just images), whose description is then inferred.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from samadapt.data.infer import propose_description
from samadapt.data.intensity import DEFAULT_INTENSITY, parse_intensity, scale_volume
from samadapt.data.io import file_stem, list_files, read_image
from samadapt.data.volumes import read_volume
from samadapt.data.masks import LAYOUTS, ClassInfo, MaskLayout, load_index_mask
from samadapt.data.spec import DatasetSpec
from samadapt.errors import UserError

DESCRIPTION_NAMES = ("dataset.yaml", "dataset.yml", "dataset.json")
KNOWN_KEYS = {"name", "modality", "dims", "images", "masks", "mask_layout", "classes", "patient_regex",
              "id_regex", "slice_axis", "fov", "intensity"}


@dataclass
class Case:
    """One image (2D) or volume (3D) and its mask file(s).

    `masks` is empty for an unlabeled image, one path for most layouts, one per class (in class
    order, `None` where a structure is missing) for the folders layout.
    """

    id: str
    patient: str
    image: Path
    masks: tuple = ()
    layout: MaskLayout | None = field(default=None, repr=False)
    dims: str = "2d"
    slice_axis: int = 2
    fov: Path | None = None
    intensity: str = DEFAULT_INTENSITY

    @property
    def labeled(self) -> bool:
        return any(m is not None for m in self.masks)

    @property
    def mask(self) -> Path | None:
        """The single mask file (first structure for the folders layout), or None."""
        return next((m for m in self.masks if m is not None), None)

    @property
    def class_names(self) -> list[str]:
        return self.layout.class_names if self.layout else []

    def load_image(self) -> np.ndarray:
        """(H, W) / (H, W, C) image as stored, or the (X, Y, Z) voxel array of a volume."""
        return read_volume(self.image).data if self.dims == "3d" else read_image(self.image)

    def load_scaled_volume(self) -> np.ndarray:
        """(X, Y, Z) float32 [0, 1]: the volume scaled as the description's `intensity` says."""
        return scale_volume(self.load_image(), self.intensity)

    def load_mask(self) -> np.ndarray:
        """Index mask uint8, same grid as `load_image()`; raises if the case is unlabeled."""
        if not self.labeled or self.layout is None:
            raise UserError("case has no mask", self.image)
        return load_index_mask(self.masks, self.layout)


@dataclass
class Dataset:
    spec: DatasetSpec
    cases: list[Case]
    orphan_masks: list[Path] = field(default_factory=list)  # masks whose image is missing

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def class_names(self) -> list[str]:
        return self.spec.class_names

    def labeled_cases(self) -> list[Case]:
        return [c for c in self.cases if c.labeled]

    def patients(self) -> dict[str, list[Case]]:
        groups: dict[str, list[Case]] = {}
        for case in self.cases:
            groups.setdefault(case.patient, []).append(case)
        return groups

    def case(self, case_id: str) -> Case:
        for case in self.cases:
            if case.id == case_id:
                return case
        raise UserError(f"case {case_id!r} is not in dataset {self.name!r}")


def _key(path: Path, id_regex: re.Pattern | None) -> str | None:
    stem = file_stem(path)
    if id_regex is None:
        return stem
    match = id_regex.search(stem)
    if not match:
        return None
    return match.groupdict().get("id") or (match.group(1) if match.groups() else match.group(0))


def _compile(pattern: str | None, what: str, source) -> re.Pattern | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UserError(f"{what} {pattern!r} is not a valid regular expression ({exc})", source) from None


def _index_folder(folder: Path, volumes: bool, id_regex, source) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in list_files(folder, volumes=volumes):
        key = _key(path, id_regex)
        if key is None:
            continue
        if key in found:
            raise UserError(f"two files map to case id {key!r}: {found[key].name} and {path.name} "
                            f"(adjust id_regex)", path)
        found[key] = path
    return found


def build_cases(spec: DatasetSpec) -> Dataset:
    """List the cases of a description by pairing image and mask files."""
    volumes = spec.dims == "3d"
    id_regex = _compile(spec.id_regex, "id_regex", spec.source)
    patient_regex = _compile(spec.patient_regex, "patient_regex", spec.source)
    images = _index_folder(spec.images, volumes, id_regex, spec.images)
    if not images:
        raise UserError(f"no {'volumes (NIfTI, NRRD, MHA, DICOM)' if volumes else 'images'} found", spec.images)

    mask_maps: list[dict[str, Path]] = []
    if spec.labeled:
        if spec.layout.kind == "folders":
            for info in spec.layout.classes:
                mask_maps.append(_index_folder(spec.masks / info.folder, volumes, id_regex, spec.masks))
        else:
            mask_maps.append(_index_folder(spec.masks, volumes, id_regex, spec.masks))
    fov_map = _index_folder(spec.fov, False, id_regex, spec.fov) if spec.fov else {}

    cases = []
    for key, image in sorted(images.items()):
        patient = key
        if patient_regex is not None:
            match = patient_regex.search(file_stem(image))
            if not match:
                raise UserError(f"patient_regex {spec.patient_regex!r} does not match the file name", image)
            patient = match.groupdict().get("patient") or (match.group(1) if match.groups() else match.group(0))
        masks = tuple(m.get(key) for m in mask_maps)
        if not any(m is not None for m in masks):
            masks = ()
        cases.append(Case(key, patient, image, masks, spec.layout, spec.dims, spec.slice_axis, fov_map.get(key),
                          spec.intensity))
    orphans = sorted({p for m in mask_maps for k, p in m.items() if k not in images})
    return Dataset(spec, cases, orphans)


def _parse_classes(raw, layout: str, base: Path, source: Path) -> tuple[ClassInfo, ...]:
    if isinstance(raw, str):  # a classes.json file next to the description
        raw = _read_mapping(base / raw)
    if isinstance(raw, dict):  # {"0": "background", "1": "BRVO"} as in classes.json
        try:
            pairs = sorted((int(k), str(v)) for k, v in raw.items())
        except (TypeError, ValueError):
            raise UserError("classes mapping keys must be integers (pixel values)", source) from None
        return tuple(ClassInfo(name, value=value) for value, name in pairs if value != 0)
    if not isinstance(raw, list) or not raw:
        raise UserError("'classes' must be a non-empty list", source)
    out = []
    for position, item in enumerate(raw, start=1):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or "name" not in item:
            raise UserError(f"class entry {item!r} needs a 'name'", source)
        extra = set(item) - {"name", "value", "color", "folder"}
        if extra:
            raise UserError(f"class {item['name']!r} has unknown keys {sorted(extra)}", source)
        value = item.get("value")
        if value is None and layout in ("index", "nifti"):
            value = position
        folder = item.get("folder") or (str(item["name"]) if layout == "folders" else None)
        color = item.get("color")
        if color is not None:
            if not (isinstance(color, (list, tuple)) and len(color) == 3):
                raise UserError(f"class {item['name']!r}: color must be [r, g, b]", source)
            color = tuple(int(c) for c in color)
        out.append(ClassInfo(str(item["name"]), None if value is None else int(value), color, folder))
    return tuple(out)


def _read_mapping(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read ({exc.strerror})", path) from None
    except UnicodeDecodeError:
        raise UserError("not a dataset description (a YAML or JSON text file) nor a dataset folder", path) from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # json / yaml syntax errors
        raise UserError(f"not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'} ({exc})", path) from None
    if not isinstance(data, (dict, list)):
        raise UserError("expected a mapping", path)
    return data


def spec_from_dict(data: dict, base: Path, source: Path | None = None) -> DatasetSpec:
    """Validate a description mapping; relative folders are resolved against `base`."""
    where = source or base
    unknown = set(data) - KNOWN_KEYS
    if unknown:
        raise UserError(f"unknown keys in dataset description: {sorted(unknown)}", where)
    if "images" not in data:
        raise UserError("dataset description needs an 'images' folder", where)

    def folder(key: str) -> Path | None:
        value = data.get(key)
        if value in (None, ""):
            return None
        path = (base / str(value)).resolve()
        if not path.is_dir():
            raise UserError(f"{key} folder {path} not found", where)
        return path

    dims = str(data.get("dims", "2d")).lower()
    if dims not in ("2d", "3d"):
        raise UserError(f"dims must be '2d' or '3d', got {dims!r}", where)
    masks = folder("masks")
    layout = None
    if masks is not None:
        kind = str(data.get("mask_layout", "nifti" if dims == "3d" else "index"))
        if kind not in LAYOUTS:
            raise UserError(f"mask_layout must be one of {', '.join(LAYOUTS)}, got {kind!r}", where)
        if "classes" not in data:
            raise UserError("a labelled dataset needs 'classes'", where)
        try:
            layout = MaskLayout(kind, _parse_classes(data["classes"], kind, base, where))
        except UserError as exc:
            raise UserError(str(exc), where) from None
    slice_axis = data.get("slice_axis", 2)
    if not isinstance(slice_axis, int) or not 0 <= slice_axis <= 2:
        raise UserError(f"slice_axis must be 0, 1 or 2, got {slice_axis!r}", where)
    intensity = DEFAULT_INTENSITY
    if data.get("intensity") is not None:
        if dims != "3d":
            raise UserError("'intensity' applies to 3d datasets (volumes); 2d images are scaled by their type", where)
        intensity = parse_intensity(data["intensity"], where)
    return DatasetSpec(
        name=str(data.get("name") or base.name), images=folder("images"), modality=str(data.get("modality", "unknown")),
        dims=dims, masks=masks, layout=layout, patient_regex=data.get("patient_regex"),
        id_regex=data.get("id_regex"), slice_axis=slice_axis, fov=folder("fov"), source=source, intensity=intensity,
    )


def read_description(path: str | Path) -> DatasetSpec:
    path = Path(path)
    data = _read_mapping(path)
    if not isinstance(data, dict):
        raise UserError("dataset description must be a mapping", path)
    return spec_from_dict(data, path.parent.resolve(), path)


def find_description(folder: Path) -> Path | None:
    for name in DESCRIPTION_NAMES:
        candidate = folder / name
        if candidate.is_file():
            # A Medical Segmentation Decathlon dataset.json has its own schema: infer instead.
            if name.endswith(".json") and "images" not in _read_mapping(candidate):
                continue
            return candidate
    return None


def load_dataset(path: str | Path, masks: str | Path | None = None) -> Dataset:
    """Load a dataset from a description file, a folder holding one, or a plain folder.

    Args:
        path: `dataset.yaml`/`.json`, a folder containing one, a folder with image and mask
            sub-folders, or a folder of images (unlabeled).
        masks: with a plain images folder, the folder of its masks (layout inferred).
    """
    path = Path(path)
    if not path.exists():
        raise UserError("dataset not found", path)
    if path.is_file():
        return build_cases(read_description(path))
    description = find_description(path) if masks is None else None
    if description is not None:
        return build_cases(read_description(description))
    return build_cases(propose_description(path, masks=masks))
