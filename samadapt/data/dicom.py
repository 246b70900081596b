"""DICOM volumes: a folder holding the slices of one (or several) series, or one multi-frame file.

Slices are grouped by SeriesInstanceUID and ordered by their position along the slice normal
(ImagePositionPatient projected on the cross product of ImageOrientationPatient's rows), and that
order is checked before any pixel is decoded: duplicated positions, gaps (a missing slice) and
uneven spacing are refused, naming the file, because SimpleITK would otherwise stack them into a
volume whose geometry is wrong. A folder with several series needs an explicit choice (`--series
UID`); the error lists the UIDs with their slice counts. Pixel data is decoded by SimpleITK
(GDCM), which returns the geometry in LPS; `samadapt.data.volumes` turns it into a RAS affine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samadapt.errors import UserError, require_module

DICOM_SUFFIX = ".dcm"
# Files with these suffixes are never DICOM; skipping them keeps folder scans cheap.
_NOT_DICOM = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", ".nii", ".gz", ".nrrd", ".nhdr", ".mha",
              ".mhd", ".raw", ".json", ".yaml", ".yml", ".txt", ".csv", ".md")
# Positions within this fraction of the slice spacing count as equal.
SPACING_TOLERANCE = 0.01
MAX_UIDS_SHOWN = 4
# Transfer syntaxes SimpleITK's GDCM decodes: uncompressed, deflate, RLE, JPEG (baseline, extended,
# lossless), JPEG-LS and JPEG 2000. Others (HTJ2K, JPEG XL, video) are refused before decoding:
# GDCM would fail on them with C-level messages on stderr.
DECODABLE_SYNTAXES = {
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
}


def require(module: str):
    """Import an optional reader library, or say in one line how to install it (the `clinical` extra)."""
    return require_module(module, "clinical", "reading DICOM, NRRD and MetaImage volumes")


def is_dicom_file(path: Path) -> bool:
    """True for a file with the DICOM preamble ('DICM' at byte 128)."""
    if path.name.startswith(".") or path.name.lower().endswith(_NOT_DICOM) or not path.is_file():
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _header(path: Path):
    pydicom = require("pydicom")

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as exc:  # pydicom raises assorted types for damaged files
        raise UserError(f"cannot read DICOM header ({type(exc).__name__}: {exc})", path) from None


def check_decodable(header, path: Path) -> None:
    """UserError for pixel data in a transfer syntax no decoder here reads."""
    meta = getattr(header, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if syntax is not None and str(syntax) not in DECODABLE_SYNTAXES:
        raise UserError(f"pixel data uses transfer syntax {syntax} ({syntax.name}), which no installed decoder reads; "
                        "convert the files to an uncompressed syntax first (e.g. gdcmconv --raw, or dcmdjpeg)", path)


def frame_count(path: Path) -> int:
    """NumberOfFrames of a DICOM file (1 when absent); 0 for an object without an image."""
    header = _header(path)
    if "Rows" not in header or "Columns" not in header:
        return 0
    return int(getattr(header, "NumberOfFrames", 1) or 1)


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly inside `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if is_dicom_file(p))


def is_series_folder(folder: Path) -> bool:
    """A folder whose own files include single-frame DICOM slices (the folder is one volume).

    Only the first DICOM file is opened: a folder of multi-frame files is a folder of volumes."""
    if not folder.is_dir() or folder.name.startswith("."):
        return False
    for path in sorted(folder.iterdir()):
        if is_dicom_file(path):
            try:
                return frame_count(path) <= 1
            except UserError:
                return True  # a damaged slice: reading the folder reports it
    return False


@dataclass
class Slice:
    path: Path
    position: np.ndarray  # (3,) ImagePositionPatient, mm (LPS)
    orientation: np.ndarray  # (6,) ImageOrientationPatient


def _series_slices(folder: Path) -> dict[str, list[Slice]]:
    """{SeriesInstanceUID: slices} of the image objects in `folder` (non-image objects are left out)."""
    series: dict[str, list[Slice]] = {}
    for path in dicom_files(folder):
        header = _header(path)
        if "Rows" not in header or "PixelSpacing" not in header:
            continue  # a structured report, segmentation-less presentation state...: no slice
        check_decodable(header, path)
        if "ImagePositionPatient" not in header or "ImageOrientationPatient" not in header:
            raise UserError("DICOM slice has no ImagePositionPatient/ImageOrientationPatient; its place in the "
                            "volume is unknown", path)
        uid = str(getattr(header, "SeriesInstanceUID", "") or "(no SeriesInstanceUID)")
        series.setdefault(uid, []).append(Slice(path, np.asarray(header.ImagePositionPatient, dtype=np.float64),
                                                np.asarray(header.ImageOrientationPatient, dtype=np.float64)))
    return series


def choose_series(folder: Path, series: str | None) -> list[Slice]:
    """The slices of the chosen (or only) image series in `folder`."""
    found = _series_slices(folder)
    if not found:
        raise UserError("no DICOM image series in the folder (no DICOM files, or only non-image objects)", folder)
    if series is None:
        if len(found) == 1:
            return next(iter(found.values()))
        listed = sorted(found.items(), key=lambda item: (-len(item[1]), item[0]))
        shown = ", ".join(f"{uid} ({len(slices)} slices)" for uid, slices in listed[:MAX_UIDS_SHOWN])
        more = f", ... ({len(listed) - MAX_UIDS_SHOWN} more)" if len(listed) > MAX_UIDS_SHOWN else ""
        raise UserError(f"{len(found)} DICOM series in the folder; choose one with --series UID: {shown}{more}", folder)
    if series not in found:
        raise UserError(f"--series {series!r} is not in the folder; it holds {', '.join(sorted(found))}", folder)
    return found[series]


def ordered_slices(slices: list[Slice], folder: Path) -> list[Slice]:
    """`slices` sorted along their normal; UserError on duplicated, missing or unevenly spaced slices."""
    first = slices[0]
    for item in slices[1:]:
        if not np.allclose(item.orientation, first.orientation, atol=1e-4):
            raise UserError(f"slice orientation differs from {first.path.name}'s (a series must be one stack)", item.path)
    normal = np.cross(first.orientation[:3], first.orientation[3:])
    slices = sorted(slices, key=lambda s: float(s.position @ normal))
    if len(slices) < 2:
        return slices
    positions = np.array([s.position @ normal for s in slices])
    steps = np.diff(positions)
    spacing = float(np.median(steps))
    for index, step in enumerate(steps):
        here, there = slices[index].path, slices[index + 1].path
        if step <= SPACING_TOLERANCE * max(spacing, 1e-6):
            raise UserError(f"duplicated slice: {here.name} and {there.name} share position "
                            f"{positions[index]:.3f} mm", there)
        ratio = step / spacing
        if abs(ratio - 1) > SPACING_TOLERANCE:
            what = (f"missing slice(s): a gap of {step:.3f} mm between {here.name} and {there.name}"
                    if abs(ratio - round(ratio)) <= SPACING_TOLERANCE and round(ratio) >= 2
                    else f"inconsistent slice spacing: {step:.3f} mm between {here.name} and {there.name}")
            raise UserError(f"{what}, where the series' spacing is {spacing:.3f} mm", folder)
    return slices


def read_series_image(folder: Path, series: str | None = None):
    """The SimpleITK image of one checked DICOM series in `folder`."""
    sitk = require("SimpleITK")

    slices = ordered_slices(choose_series(folder, series), folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(s.path) for s in slices])
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise UserError(f"cannot decode the DICOM series ({error_summary(exc)})", folder) from None


def read_multiframe_image(path: Path):
    """The SimpleITK image of a multi-frame DICOM file (one volume in one file)."""
    sitk = require("SimpleITK")

    frames = frame_count(path)
    if frames == 0:
        header = _header(path)
        raise UserError(f"DICOM object holds no image (SOP class {getattr(header, 'SOPClassUID', 'unknown')})", path)
    if frames == 1:
        raise UserError("a single DICOM slice; pass the folder holding its series", path)
    check_decodable(_header(path), path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise UserError(f"cannot decode the DICOM file ({error_summary(exc)})", path) from None


def error_summary(exc: Exception) -> str:
    """The last line of an ITK exception: the reason, without ITK's source-file preamble."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
