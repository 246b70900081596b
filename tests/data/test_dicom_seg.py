"""DICOM-SEG output: it references the source series and reads back (highdicom) into the same
mask, voxel for voxel at the same world positions."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from clinical_files import sample_volume, write_dicom_series, write_itk

from samadapt.data.dicom_seg import dicom_seg_bytes, write_dicom_seg
from samadapt.data.volumes import read_volume
from samadapt.errors import UserError

LPS = np.diag([-1.0, -1.0, 1.0])
# Slices stored sagittally with the column direction pointing down: not the canonical order.
DIRECTION = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def test_segmentation_reads_back_at_the_source_slices_world_positions(tmp_path):
    import highdicom as hd

    files = write_dicom_series(tmp_path / "ct", sample_volume(), (0.8, 0.9, 2.5), DIRECTION, (5.0, 6.0, 7.0))
    volume = read_volume(tmp_path / "ct")
    labels = np.zeros(volume.shape, np.uint8)
    labels[1:3, 0:2, 2:4] = 1
    labels[3, 4, 1] = 2
    write_dicom_seg(tmp_path / "ct_seg.dcm", labels, volume, ["liver", "lesion"])
    seg = hd.seg.segread(str(tmp_path / "ct_seg.dcm"))
    assert [seg.get_segment_description(n).SegmentLabel for n in (1, 2)] == ["liver", "lesion"]
    series_uid = pydicom.dcmread(str(files[0])).SeriesInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    to_canonical = np.linalg.inv(volume.affine)
    checked = 0
    for path in files:
        source = pydicom.dcmread(str(path))
        frame = seg.get_pixels_by_source_instance([source.SOPInstanceUID], combine_segments=True)[0]
        row_dir, col_dir = np.asarray(source.ImageOrientationPatient[:3]), np.asarray(source.ImageOrientationPatient[3:])
        dy, dx = (float(v) for v in source.PixelSpacing)
        for r in range(source.Rows):
            for c in range(source.Columns):
                lps = np.asarray(source.ImagePositionPatient) + c * dx * row_dir + r * dy * col_dir
                index = np.round(to_canonical @ np.array([*(LPS @ lps), 1.0])).astype(int)[:3]
                assert frame[r, c] == labels[tuple(index)], (path.name, r, c)
                checked += int(frame[r, c] > 0)
    assert checked == int((labels > 0).sum())


def test_only_dicom_series_get_a_segmentation(tmp_path):
    volume = read_volume(write_itk(tmp_path / "v.nrrd", sample_volume()))
    with pytest.raises(UserError, match="DICOM-SEG output needs a DICOM series folder"):
        dicom_seg_bytes(np.zeros(volume.shape, np.uint8), volume, ["a"])
    write_dicom_series(tmp_path / "ct", sample_volume())
    series = read_volume(tmp_path / "ct")
    with pytest.raises(UserError, match="does not fit the series' 4 slices and 1 classes"):
        dicom_seg_bytes(np.full(series.shape, 2, np.uint8), series, ["a"])
