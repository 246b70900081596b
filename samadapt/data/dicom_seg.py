"""Label volumes as DICOM Segmentation objects (highdicom) that reference the DICOM series they
were predicted from, so PACS viewers, OHIF and 3D Slicer show them on the source images.

One segment per class (binary segmentation, frames in the source series' slice order, empty frames
left out); the segments' category and type are the generic SNOMED CT "Tissue" code, labelled with
the class name, and the algorithm is recorded as samadapt's (automatic, AI family).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from samadapt.data import dicom
from samadapt.data.volumes import Volume
from samadapt.engine.atomic import atomic_write_bytes
from samadapt.errors import UserError

SEG_SUFFIX = "_seg.dcm"
SEG_SERIES_NUMBER = 900


def _segment_descriptions(class_names: list[str]):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    import samadapt

    algorithm = hd.AlgorithmIdentificationSequence(name="samadapt", version=samadapt.__version__,
                                                   family=codes.DCM.ArtificialIntelligence)
    return [hd.seg.SegmentDescription(segment_number=number, segment_label=name[:64],
                                      segmented_property_category=codes.SCT.Tissue,
                                      segmented_property_type=codes.SCT.Tissue,
                                      algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                                      algorithm_identification=algorithm)
            for number, name in enumerate(class_names, start=1)]


def dicom_seg_bytes(labels: np.ndarray, volume: Volume, class_names: list[str], series: str | None = None) -> bytes:
    """DICOM-SEG bytes of `labels` (on `volume.data`'s canonical grid; values 0..len(class_names))
    for the DICOM series folder `volume` was read from."""
    hd = dicom.require("highdicom")
    import pydicom

    folder = volume.path
    if folder is None or not folder.is_dir():
        raise UserError("DICOM-SEG output needs a DICOM series folder as input", folder)
    slices = dicom.ordered_slices(dicom.choose_series(folder, series), folder)
    stored, _ = volume.to_stored(np.asarray(labels, dtype=np.uint8))  # (X, Y, Z) in the series' slice order
    if stored.shape[2] != len(slices) or int(stored.max(initial=0)) > len(class_names):
        raise UserError(f"label volume {stored.shape} does not fit the series' {len(slices)} slices "
                        f"and {len(class_names)} classes", folder)
    frames = np.ascontiguousarray(stored.transpose(2, 1, 0))  # (slices, rows, columns)
    sources = [pydicom.dcmread(str(s.path)) for s in slices]
    try:
        segmentation = hd.seg.Segmentation(
            source_images=sources, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=_segment_descriptions(class_names), series_instance_uid=hd.UID(),
            series_number=SEG_SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1, manufacturer="samadapt",
            manufacturer_model_name="samadapt", software_versions=_version(), device_serial_number="0",
            series_description="samadapt segmentation", omit_empty_frames=bool(frames.any()))
    except (AttributeError, ValueError, TypeError, KeyError) as exc:
        raise UserError(f"cannot write DICOM-SEG for this series ({type(exc).__name__}: {exc})", folder) from None
    buffer = io.BytesIO()
    segmentation.save_as(buffer)
    return buffer.getvalue()


def _version() -> str:
    import samadapt

    return str(samadapt.__version__)


def write_dicom_seg(path: str | Path, labels: np.ndarray, volume: Volume, class_names: list[str],
                    series: str | None = None) -> None:
    atomic_write_bytes(path, dicom_seg_bytes(labels, volume, class_names, series))
