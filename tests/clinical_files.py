"""Tiny synthetic clinical files for the tests: DICOM series and multi-frame files (pydicom), NRRD
and MHA (SimpleITK), NIfTI (nibabel), all of one volume with one known geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LPS = np.diag([-1.0, -1.0, 1.0])


def ras_affine(spacing, direction_lps=np.eye(3), origin_lps=(0.0, 0.0, 0.0)) -> np.ndarray:
    """The RAS affine of an ITK-style geometry (direction columns and origin in LPS)."""
    affine = np.eye(4)
    affine[:3, :3] = LPS @ np.asarray(direction_lps, dtype=float) @ np.diag(spacing)
    affine[:3, 3] = LPS @ np.asarray(origin_lps, dtype=float)
    return affine


def sample_volume(shape=(6, 5, 4), seed: int = 0) -> np.ndarray:
    """(X, Y, Z) int16 volume with distinct values, so any axis mix-up shows."""
    return (np.random.default_rng(seed).permutation(int(np.prod(shape))).reshape(shape) - 50).astype(np.int16)


def _base_dataset(sop_class: str, series_uid: str, study_uid: str, frame_uid: str | None = None):
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.PatientName, ds.PatientID, ds.Modality = "Test^Phantom", "P1", "CT"
    # Patient, study, series and frame-of-reference attributes a real scanner writes (DICOM-SEG copies them).
    ds.PatientBirthDate, ds.PatientSex, ds.StudyDate, ds.StudyTime = "19700101", "O", "20260101", "120000"
    ds.ReferringPhysicianName, ds.AccessionNumber, ds.StudyID, ds.SeriesNumber = "", "A1", "S1", 1
    ds.Manufacturer = "synthetic"
    ds.FrameOfReferenceUID = frame_uid or generate_uid()
    del pydicom
    return ds


def _pixel_module(ds, rows: int, columns: int) -> None:
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1


def write_dicom_series(folder: Path, data: np.ndarray, spacing=(0.8, 0.9, 2.5), direction_lps=np.eye(3),
                       origin_lps=(10.0, -20.0, 30.0), series_uid: str | None = None, study_uid: str | None = None,
                       positions: list[float] | None = None, prefix: str = "slice") -> list[Path]:
    """One CT slice file per z of (X, Y, Z) `data`; `positions` (mm along the normal) override the
    regular spacing to make gaps or duplicates. Returns the files."""
    from pydicom.uid import CTImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    direction = np.asarray(direction_lps, dtype=float)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    offsets = positions if positions is not None else [k * spacing[2] for k in range(data.shape[2])]
    frame_uid = generate_uid()
    files = []
    for k, offset in enumerate(offsets):
        ds = _base_dataset(CTImageStorage, series_uid, study_uid, frame_uid)
        _pixel_module(ds, data.shape[1], data.shape[0])
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # row spacing (y), column spacing (x)
        ds.SliceThickness = float(spacing[2])
        ds.ImageOrientationPatient = [float(v) for v in (*direction[:, 0], *direction[:, 1])]
        ds.ImagePositionPatient = [float(v) for v in np.asarray(origin_lps) + offset * direction[:, 2]]
        ds.InstanceNumber = k + 1
        ds.PixelData = np.ascontiguousarray(data[:, :, min(k, data.shape[2] - 1)].T.astype(np.int16)).tobytes()
        path = folder / f"{prefix}{k:03d}"
        ds.save_as(str(path), enforce_file_format=True)
        files.append(path)
    return files


def write_multiframe_dicom(path: Path, data: np.ndarray, spacing=(0.8, 0.9, 2.5),
                           origin_lps=(10.0, -20.0, 30.0)) -> Path:
    """One multi-frame CT file of (X, Y, Z) `data` (axial, LPS-aligned)."""
    from pydicom.uid import CTImageStorage, generate_uid

    ds = _base_dataset(CTImageStorage, generate_uid(), generate_uid())
    _pixel_module(ds, data.shape[1], data.shape[0])
    ds.NumberOfFrames = data.shape[2]
    ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
    ds.SliceThickness = ds.SpacingBetweenSlices = float(spacing[2])
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.ImagePositionPatient = [float(v) for v in origin_lps]
    ds.PixelData = np.ascontiguousarray(data.transpose(2, 1, 0).astype(np.int16)).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def mark_compressed(files: list[Path], syntax: str = "1.2.840.10008.1.2.4.201") -> None:
    """Re-save slices as if their pixels were compressed in `syntax` (HTJ2K by default; the
    encapsulated bytes are a stub, as a decoder would never be reached)."""
    import pydicom
    from pydicom.encaps import encapsulate

    for path in files:
        ds = pydicom.dcmread(str(path))
        ds.file_meta.TransferSyntaxUID = syntax
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(40)])
        ds.save_as(str(path), enforce_file_format=True)


def write_non_image_dicom(path: Path) -> Path:
    """A Basic Text SR object: DICOM, but no pixels."""
    from pydicom.uid import generate_uid

    ds = _base_dataset("1.2.840.10008.5.1.4.1.1.88.11", generate_uid(), generate_uid())
    ds.Modality = "SR"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_itk(path: Path, data: np.ndarray, spacing=(0.8, 0.9, 2.5), direction_lps=np.eye(3),
              origin_lps=(10.0, -20.0, 30.0)) -> Path:
    """NRRD / MHA / MHD (by suffix) of (X, Y, Z) `data` with an ITK (LPS) geometry."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in np.asarray(direction_lps, dtype=float).ravel()])
    image.SetOrigin([float(v) for v in origin_lps])
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path
