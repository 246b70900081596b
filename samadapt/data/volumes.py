"""Read 3D volumes (NIfTI, NRRD, MHA/MHD, DICOM series and multi-frame files) in one canonical
orientation, and write label volumes back in the input's own format and geometry.

Canonical orientation: every reader returns `Volume.data` in nibabel's closest canonical RAS+
voxel order (`io_orientation` + `apply_orientation`, what `nibabel.as_closest_canonical` does):
index 0 grows towards the patient's Right, index 1 towards Anterior, index 2 towards Superior. Only axis permutations and flips are applied (no resampling), so an oblique
volume keeps its obliquity in `Volume.affine` and every voxel keeps its value. With one orientation,
`slice_axis: 2` means axial slices whatever order the file stored its voxels in, and the few-shot
prototypes see anatomy the same way up in every volume. Writers undo the permutation, so a label
volume lands on the input's own voxel grid, with its affine (NIfTI) or spacing, direction and
origin (NRRD, MHA).

NRRD/MHA/MHD/DICOM are decoded by SimpleITK, whose geometry is in LPS; it is converted to a RAS
affine (x and y negated) so all formats share nibabel's convention.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from samadapt.data import dicom
from samadapt.data.io import _check_file, _quiet_decoders, file_suffix
from samadapt.engine.atomic import atomic_write_bytes
from samadapt.errors import UserError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
VOLUME_FILE_SUFFIXES = (*NIFTI_SUFFIXES, *ITK_SUFFIXES, dicom.DICOM_SUFFIX)
# Label volumes are written in the input's format; detached-header and DICOM inputs get one file.
OUTPUT_SUFFIX = {".nii": ".nii", ".nii.gz": ".nii.gz", ".nrrd": ".nrrd", ".nhdr": ".nrrd", ".mha": ".mha",
                 ".mhd": ".mha", dicom.DICOM_SUFFIX: ".nii.gz", "": ".nii.gz"}
WRITABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")
_LPS = np.diag([-1.0, -1.0, 1.0])  # ITK's LPS <-> nibabel's RAS
_RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=np.float64)  # nibabel orientation of RAS+ data


@dataclass
class Volume:
    """A volume and the geometry needed to write results back in its own space.

    `data` is (X, Y, Z) in canonical RAS+ voxel order (see the module docstring), `affine` maps its
    voxel indices to RAS millimetres. `stored_affine` and `stored_ornt` describe the file's own
    voxel order (None: `data` is stored as it is, as for volumes built in memory).
    """

    data: np.ndarray
    affine: np.ndarray
    header: Any = field(default=None, repr=False)
    path: Path | None = None
    stored_affine: np.ndarray | None = field(default=None, repr=False)
    stored_ornt: np.ndarray | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each axis of `data`."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0)[: self.data.ndim])

    def to_stored(self, array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(array in the file's voxel order, the file's affine) for an array on `data`'s grid."""
        if self.stored_ornt is None:
            return np.asarray(array), self.affine
        from nibabel.orientations import apply_orientation, ornt_transform

        return apply_orientation(np.asarray(array), ornt_transform(_RAS, self.stored_ornt)), self.stored_affine


def canonical(data: np.ndarray, affine: np.ndarray, header=None, path: Path | None = None) -> Volume:
    """A `Volume` of stored `data` with its `affine`, reordered to RAS+ (3D data only)."""
    if data.ndim != 3:
        return Volume(data, affine, header, path)
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

    ornt = io_orientation(affine)
    reoriented = np.ascontiguousarray(apply_orientation(data, ornt))
    return Volume(reoriented, affine @ inv_ornt_aff(ornt, data.shape), header, path, affine, ornt)


def canonical_shape(shape: tuple[int, ...], affine: np.ndarray) -> tuple[int, ...]:
    """The shape `canonical` gives a stored volume of `shape` and `affine` (header-only reads)."""
    if len(shape) != 3:
        return shape
    from nibabel.orientations import io_orientation

    ornt = io_orientation(affine)
    out = [0, 0, 0]
    for axis, (target, _) in enumerate(ornt):
        out[int(target)] = shape[axis]
    return tuple(out)


def itk_affine(image) -> np.ndarray:
    """RAS voxel-to-world affine of a SimpleITK image's (x, y, z) index order."""
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)[:3]
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(image.GetDimension(), -1)[:3, :3]
    affine = np.eye(4)
    affine[:3, :3] = _LPS @ direction @ np.diag(spacing)
    affine[:3, 3] = _LPS @ np.asarray(image.GetOrigin(), dtype=np.float64)[:3]
    return affine


def itk_image(data: np.ndarray, affine: np.ndarray):
    """A SimpleITK image of (X, Y, Z) `data` whose spacing, direction and origin realise `affine`."""
    sitk = dicom.require("SimpleITK")

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data).transpose(2, 1, 0)))
    lps = _LPS @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (lps / spacing).ravel()])
    image.SetOrigin([float(v) for v in _LPS @ affine[:3, 3]])
    return image


_DATA_FILE = re.compile(r"^\s*(data\s*file|ElementDataFile)\s*[:=]\s*(\S+)", re.IGNORECASE)


def check_detached_data(header_path: Path) -> list[Path]:
    """The data files a detached NRRD/MHD header names, which may only lie in its own folder (no
    `../`, no absolute path elsewhere): a header copied out of its folder, or a hostile one, cannot
    reach other files."""
    try:
        lines = header_path.read_text(encoding="latin-1", errors="replace").splitlines()
    except OSError as exc:
        raise UserError(f"cannot read header ({exc.strerror})", header_path) from None
    folder = header_path.parent.resolve()
    names: list[str] = []
    for number, line in enumerate(lines):
        match = _DATA_FILE.match(line)
        if match is None:
            continue
        name = match.group(2)
        if name.upper() == "LIST":
            names += [entry.strip() for entry in lines[number + 1:] if entry.strip()]
        elif name.upper() != "LOCAL":
            names.append(name)
    targets = []
    for name in names:
        target = (folder / name).resolve()
        if not target.is_relative_to(folder):
            raise UserError(f"detached header points to data file {name!r} outside its folder", header_path)
        targets.append(target)
    return targets


def volume_sha256(path: str | Path) -> str:
    """sha256 of what a volume is made of: its file, a detached header with its data files, or the
    DICOM files of a series folder (caches key their features on it)."""
    import hashlib

    from samadapt.engine.atomic import sha256_file

    path = Path(path)
    if path.is_dir():
        files = dicom.dicom_files(path)
    elif file_suffix(path) in (".nhdr", ".mhd"):
        files = [path, *(p for p in check_detached_data(path) if p.is_file())]
    else:
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}:{sha256_file(file)};".encode())
    return digest.hexdigest()


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, Any]:
    import nibabel as nib

    try:
        with _quiet_decoders():
            image = nib.load(str(path))
            data = np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel and gzip raise assorted types for damaged files
        raise UserError(f"cannot read NIfTI volume ({type(exc).__name__}: {exc})", path) from None
    return np.asarray(data), np.asarray(image.affine, dtype=np.float64), image.header


def _read_itk(path: Path, series: str | None) -> tuple[np.ndarray, np.ndarray, Any]:
    sitk = dicom.require("SimpleITK")

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # the checks here say it once, as a UserError
    if path.is_dir():
        image = dicom.read_series_image(path, series)
    elif file_suffix(path) == dicom.DICOM_SUFFIX:
        image = dicom.read_multiframe_image(path)
    else:
        if file_suffix(path) in (".nhdr", ".mhd"):
            check_detached_data(path)
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            raise UserError(f"cannot read {file_suffix(path)[1:].upper()} volume ({dicom.error_summary(exc)})", path) from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise UserError(f"expected a scalar volume, found {image.GetNumberOfComponentsPerPixel()} components "
                        "per voxel", path)
    data = sitk.GetArrayFromImage(image)  # (..., Z, Y, X)
    data = data.transpose(tuple(range(data.ndim))[::-1])
    affine = itk_affine(image) if image.GetDimension() >= 3 else np.eye(4)
    return data, affine, None


def read_volume(path: str | Path, expect_3d: bool = True, series: str | None = None) -> Volume:
    """Read a volume file (or DICOM series folder) into canonical RAS+ order.

    `series` picks a SeriesInstanceUID in a DICOM folder holding several; a trailing singleton 4th
    axis is dropped.
    """
    path = Path(path)
    is_series = path.is_dir()
    if not is_series:
        _check_file(path, VOLUME_FILE_SUFFIXES)
    if series is not None and not is_series:
        raise UserError(f"--series {series!r} applies to a DICOM folder, not to a single file", path)
    if file_suffix(path) in NIFTI_SUFFIXES:
        data, affine, header = _read_nifti(path)
    else:
        data, affine, header = _read_itk(path, series)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if expect_3d and data.ndim != 3:
        raise UserError(f"expected a 3D volume, found {data.ndim}D with shape {data.shape}", path)
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise UserError("volume contains NaN or infinite values", path)
    return canonical(data, affine, header, path)


def _itk_shape(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    sitk = dicom.require("SimpleITK")

    if file_suffix(path) in (".nhdr", ".mhd"):
        check_detached_data(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise UserError(f"cannot read {file_suffix(path)[1:].upper()} header ({dicom.error_summary(exc)})", path) from None
    return tuple(int(s) for s in reader.GetSize()), itk_affine(reader)


def read_volume_shape(path: str | Path) -> tuple[int, ...]:
    """Canonical shape of a volume from its header only (DICOM volumes are read whole)."""
    import nibabel as nib

    path = Path(path)
    if path.is_dir() or file_suffix(path) == dicom.DICOM_SUFFIX:
        return read_volume(path).shape
    _check_file(path, VOLUME_FILE_SUFFIXES)
    if file_suffix(path) in ITK_SUFFIXES:
        shape, affine = _itk_shape(path)
    else:
        try:
            with _quiet_decoders():
                image = nib.load(str(path))
                shape, affine = tuple(int(s) for s in image.shape), image.affine
        except Exception as exc:
            raise UserError(f"cannot read NIfTI header ({type(exc).__name__}: {exc})", path) from None
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return canonical_shape(shape, affine)


def output_suffix(volume: Volume) -> str:
    """The suffix a label volume for `volume` is written with: its own format (see OUTPUT_SUFFIX)."""
    if volume.path is None or volume.path.is_dir():
        return OUTPUT_SUFFIX[""]
    return OUTPUT_SUFFIX.get(file_suffix(volume.path), OUTPUT_SUFFIX[""])


def volume_to_bytes(volume: Volume, gz: bool) -> bytes:
    """NIfTI bytes of `volume` in its stored voxel order (deterministic)."""
    import gzip

    import nibabel as nib

    data, affine = volume.to_stored(volume.data)
    header = volume.header.copy() if isinstance(volume.header, nib.Nifti1Header) else None
    image = nib.Nifti1Image(np.asarray(data), affine, header=header)
    image.set_data_dtype(np.asarray(data).dtype)
    image.header.set_slope_inter(1.0, 0.0)  # labels are stored as-is, never rescaled
    raw = image.to_bytes()
    # mtime=0 keeps the bytes identical between runs.
    return gzip.compress(raw, compresslevel=6, mtime=0) if gz else raw


def _itk_bytes(volume: Volume, suffix: str) -> bytes:
    sitk = dicom.require("SimpleITK")

    data, affine = volume.to_stored(volume.data)
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / f"volume{suffix}"
        sitk.WriteImage(itk_image(data, affine), str(target), True)
        return target.read_bytes()


def write_volume(path: str | Path, volume: Volume) -> None:
    path = Path(path)
    suffix = file_suffix(path)
    if suffix not in WRITABLE_SUFFIXES:
        raise UserError(f"output volume must end in {', '.join(WRITABLE_SUFFIXES)}", path)
    if suffix in NIFTI_SUFFIXES:
        atomic_write_bytes(path, volume_to_bytes(volume, gz=suffix == ".nii.gz"))
    else:
        atomic_write_bytes(path, _itk_bytes(volume, suffix))


def write_label_volume(path: str | Path, labels: np.ndarray, like: Volume) -> None:
    """Write an integer label volume on `like.data`'s grid in `like`'s own space and voxel order."""
    labels = np.asarray(labels)
    if labels.shape != like.data.shape[: labels.ndim] or labels.ndim != 3:
        raise UserError(f"label volume shape {labels.shape} does not match the image {like.data.shape}", path)
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
        raise UserError("label values must be in 0..255", path)
    write_volume(path, Volume(labels.astype(np.uint8), like.affine, like.header, Path(path),
                              like.stored_affine, like.stored_ornt))
