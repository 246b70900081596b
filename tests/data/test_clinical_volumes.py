"""NRRD, MHA/MHD and DICOM volumes next to NIfTI: one canonical orientation on reading, each file's
own geometry on writing, and one-line errors for broken series and headers."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
from clinical_files import (
    ras_affine,
    sample_volume,
    write_dicom_series,
    write_itk,
    mark_compressed,
    write_multiframe_dicom,
    write_nifti,
    write_non_image_dicom,
)

from samadapt.data.dataset import load_dataset
from samadapt.data.io import file_stem, list_files
from samadapt.data.volumes import output_suffix, read_volume, read_volume_shape, volume_sha256, write_label_volume
from samadapt.errors import UserError

SPACING = (0.8, 0.9, 2.5)
ORIGIN = (10.0, -20.0, 30.0)
# Voxel axes stored as (S, L, P) instead of (L, P, S) and the last one reversed: a permuted, flipped file.
PERMUTED = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
OBLIQUE = np.array([[np.cos(0.3), -np.sin(0.3), 0.0], [np.sin(0.3), np.cos(0.3), 0.0], [0.0, 0.0, 1.0]])


def _write_all(folder, data, direction):
    """The same volume as DICOM series, NRRD, NHDR, MHA, MHD and NIfTI; returns the paths."""
    write_dicom_series(folder / "dicom", data, SPACING, direction, ORIGIN)
    paths = [folder / "dicom"]
    for name in ("v.nrrd", "v.nhdr", "v.mha", "v.mhd"):
        paths.append(write_itk(folder / name, data, SPACING, direction, ORIGIN))
    paths.append(write_nifti(folder / "v.nii.gz", data, ras_affine(SPACING, direction, ORIGIN)))
    return paths


@pytest.mark.parametrize("direction", [np.eye(3), PERMUTED, OBLIQUE], ids=["lps", "permuted", "oblique"])
def test_every_format_reads_the_same_canonical_volume(tmp_path, direction):
    data = sample_volume()
    volumes = [read_volume(p) for p in _write_all(tmp_path, data, direction)]
    reference = volumes[-1]
    assert nib.aff2axcodes(reference.affine) == ("R", "A", "S")
    for volume in volumes:
        assert np.array_equal(volume.data, reference.data), volume.path
        assert np.allclose(volume.affine, reference.affine, atol=1e-5), volume.path
        assert read_volume_shape(volume.path) == volume.shape
    # Every voxel keeps its world position: the stored voxel (i, j, k) is where its value now lies.
    stored_world = ras_affine(SPACING, direction, ORIGIN) @ np.array([1, 2, 3, 1.0])
    index = np.round(np.linalg.inv(reference.affine) @ stored_world).astype(int)[:3]
    assert reference.data[tuple(index)] == data[1, 2, 3]


def test_a_multi_frame_dicom_file_is_one_volume(tmp_path):
    data = sample_volume()
    path = write_multiframe_dicom(tmp_path / "mf" / "ct.dcm", data, SPACING, ORIGIN)
    volume = read_volume(path)
    reference = read_volume(write_itk(tmp_path / "v.nrrd", data, SPACING, np.eye(3), ORIGIN))
    assert np.array_equal(volume.data, reference.data) and np.allclose(volume.affine, reference.affine, atol=1e-5)
    assert list_files(tmp_path / "mf", volumes=True) == [path]  # a folder of multi-frame files is not a series
    single = write_dicom_series(tmp_path / "one", data[:, :, :1])[0]
    with pytest.raises(UserError, match="a single DICOM slice; pass the folder holding its series"):
        read_volume(single.rename(single.with_suffix(".dcm")))


def test_spacing_follows_the_canonical_axes(tmp_path):
    volume = read_volume(write_itk(tmp_path / "v.nrrd", sample_volume(), SPACING, PERMUTED, ORIGIN))
    # Stored axes (L, P, S)-permuted as (S, L, P): canonical x is stored axis 1, y axis 2, z axis 0.
    assert volume.spacing == pytest.approx((SPACING[1], SPACING[2], SPACING[0]))


def _raw_geometry(path):
    """(shape, RAS affine) of a file as nibabel / SimpleITK (GDCM's own slice sorting) read it."""
    import SimpleITK as sitk

    if path.name.endswith(".nii.gz"):
        raw = nib.load(str(path))
        return raw.shape, raw.affine
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        image = reader.Execute()
    else:
        image = sitk.ReadImage(str(path))
    affine = ras_affine(image.GetSpacing(), np.reshape(image.GetDirection(), (3, 3)), image.GetOrigin())
    return image.GetSize(), affine


@pytest.mark.parametrize("direction", [np.eye(3), PERMUTED], ids=["lps", "permuted"])
def test_labels_land_at_the_same_world_positions_in_every_input_geometry(tmp_path, direction):
    """A mask drawn in canonical space is written back into each file's own voxel order and read
    raw (nibabel / SimpleITK, no samadapt): the labelled voxel is at the same world point."""
    import SimpleITK as sitk

    paths = _write_all(tmp_path / "in", sample_volume(), direction)
    target_world = None
    for path in paths:
        volume = read_volume(path)
        labels = np.zeros(volume.shape, np.uint8)
        labels[1, 2, 3] = 7
        world = volume.affine @ np.array([1, 2, 3, 1.0])
        target_world = world if target_world is None else target_world
        assert np.allclose(world, target_world, atol=1e-4)
        out = tmp_path / "out" / f"{file_stem(path)}_{path.suffix.strip('.') or 'dir'}_mask{output_suffix(volume)}"
        write_label_volume(out, labels, volume)
        if out.name.endswith(".nii.gz"):
            stored = np.asarray(nib.load(str(out)).dataobj)
        else:
            stored = sitk.GetArrayFromImage(sitk.ReadImage(str(out))).transpose(2, 1, 0)
        shape, affine = _raw_geometry(out)
        input_shape, input_affine = _raw_geometry(path)
        assert tuple(shape) == tuple(input_shape) and np.allclose(affine, input_affine, atol=1e-5), out
        voxel = np.argwhere(stored == 7)
        assert len(voxel) == 1
        assert np.allclose(affine @ np.array([*voxel[0], 1.0]), target_world, atol=1e-4), out
    suffixes = sorted(p.name.split("_mask")[1] for p in (tmp_path / "out").iterdir())
    assert suffixes == [".mha", ".mha", ".nii.gz", ".nii.gz", ".nrrd", ".nrrd"]


def test_a_dataset_may_mix_formats_and_dicom_folders(tmp_path):
    data = sample_volume()
    root = tmp_path / "ds"
    write_dicom_series(root / "images" / "c1", data, SPACING, np.eye(3), ORIGIN)
    write_itk(root / "images" / "c2.nrrd", data, SPACING, PERMUTED, ORIGIN)
    write_nifti(root / "images" / "c3.nii.gz", data, ras_affine(SPACING, np.eye(3), ORIGIN))
    labels = (data > 0).astype(np.uint8)
    write_itk(root / "masks" / "c1.nrrd", labels, SPACING, np.eye(3), ORIGIN)
    write_nifti(root / "masks" / "c2.nii.gz", labels, ras_affine(SPACING, PERMUTED, ORIGIN))
    write_itk(root / "masks" / "c3.mha", labels, SPACING, np.eye(3), ORIGIN)
    (root / "dataset.yaml").write_text("name: mixed\ndims: 3d\nimages: images\nmasks: masks\nmask_layout: nifti\n"
                                       "classes: [{name: fg, value: 1}]\n")
    assert [p.name for p in list_files(root / "images", volumes=True)] == ["c1", "c2.nrrd", "c3.nii.gz"]
    dataset = load_dataset(root)
    assert [c.id for c in dataset.cases] == ["c1", "c2", "c3"] and all(c.labeled for c in dataset.cases)
    for case in dataset.cases:
        image, mask = case.load_image(), case.load_mask()
        assert np.array_equal(mask, (image > 0).astype(np.uint8)), case.id  # same grid after reorientation
    from samadapt.data.check import check_dataset

    assert check_dataset(dataset).errors == []
    assert volume_sha256(root / "images" / "c1") != volume_sha256(root / "images" / "c2.nrrd")


def test_two_series_need_a_choice_and_the_error_lists_them(tmp_path):
    folder = tmp_path / "two"
    write_dicom_series(folder, sample_volume(), series_uid="1.2.3.4", prefix="a")
    write_dicom_series(folder, sample_volume(seed=1)[:, :, :3], series_uid="1.2.3.5", prefix="b")
    with pytest.raises(UserError, match=r"2 DICOM series in the folder; choose one with --series UID: "
                                        r"1\.2\.3\.4 \(4 slices\), 1\.2\.3\.5 \(3 slices\)") as error:
        read_volume(folder)
    assert str(folder) in str(error.value) and "\n" not in str(error.value)
    assert read_volume(folder, series="1.2.3.5").shape == (6, 5, 3)
    with pytest.raises(UserError, match="--series '9.9' is not in the folder"):
        read_volume(folder, series="9.9")


@pytest.mark.parametrize("positions, message", [
    ([0.0, 2.5, 7.5, 10.0], r"missing slice\(s\): a gap of 5.000 mm between slice001 and slice002"),
    ([0.0, 2.5, 2.5, 5.0], "duplicated slice: slice001 and slice002 share position"),
    ([0.0, 2.5, 4.0, 6.5], "inconsistent slice spacing: 1.500 mm between slice001 and slice002"),
])
def test_broken_slice_stacks_are_refused_naming_the_files(tmp_path, positions, message):
    write_dicom_series(tmp_path / "s", sample_volume(), positions=positions)
    with pytest.raises(UserError, match=message):
        read_volume(tmp_path / "s")


def test_a_compressed_series_without_a_decoder_is_refused_before_decoding(tmp_path, capfd):
    mark_compressed(write_dicom_series(tmp_path / "s", sample_volume()))
    with pytest.raises(UserError, match=r"slice000: pixel data uses transfer syntax 1.2.840.10008.1.2.4.201"):
        read_volume(tmp_path / "s")
    assert capfd.readouterr().err == ""  # the decoder's own messages never appear


def test_non_image_dicom_is_refused(tmp_path):
    sr = write_non_image_dicom(tmp_path / "report.dcm")
    with pytest.raises(UserError, match="DICOM object holds no image"):
        read_volume(sr)
    (tmp_path / "only_sr").mkdir()
    shutil.copy(sr, tmp_path / "only_sr" / "x")
    with pytest.raises(UserError, match="no DICOM image series in the folder"):
        read_volume(tmp_path / "only_sr")


def test_detached_header_pointing_outside_its_folder_is_refused(tmp_path):
    write_itk(tmp_path / "elsewhere" / "v.nhdr", sample_volume())
    header = tmp_path / "hdr" / "v.nhdr"
    header.parent.mkdir()
    text = (tmp_path / "elsewhere" / "v.nhdr").read_text(encoding="latin-1")
    header.write_text("\n".join(line if not line.startswith("data file") else "data file: ../elsewhere/v.raw.gz"
                                for line in text.splitlines()) + "\n", encoding="latin-1")
    with pytest.raises(UserError, match=r"v.nhdr: detached header points to data file '../elsewhere/v.raw.gz' "
                                        "outside its folder"):
        read_volume(header)
    with pytest.raises(UserError, match="outside its folder"):
        read_volume_shape(header)


def test_series_option_is_only_for_dicom_folders(tmp_path):
    path = write_itk(tmp_path / "v.mha", sample_volume())
    with pytest.raises(UserError, match="--series '1.2' applies to a DICOM folder"):
        read_volume(path, series="1.2")


def test_a_hippocampus_volume_converted_on_the_fly_reads_back_the_same(tmp_path):
    """A real MR volume (MSD hippocampus, when ../shared/data is present) written as a DICOM series,
    NRRD and MHA in the test: every copy reads back with the NIfTI's voxels and geometry."""
    from shared_data import shared_subdir

    source = shared_subdir("hippocampus", "imagesTr") / "hippocampus_001.nii.gz"
    original = read_volume(source)
    stored, affine = original.to_stored(original.data)
    direction_lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    origin_lps = tuple(float(v) for v in np.diag([-1.0, -1.0, 1.0]) @ affine[:3, 3])
    data = stored.astype(np.int16)
    copies = [write_dicom_series(tmp_path / "dicom", data, spacing, direction_lps, origin_lps)[0].parent,
              write_itk(tmp_path / "v.nrrd", data, spacing, direction_lps, origin_lps),
              write_itk(tmp_path / "v.mha", data, spacing, direction_lps, origin_lps)]
    for copy in copies:
        volume = read_volume(copy)
        assert np.array_equal(volume.data, original.data), copy
        assert np.allclose(volume.affine, original.affine, atol=1e-4), copy
