"""Readers and writers: formats, bit depths, channels, NIfTI geometry, and broken files."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from samadapt.data.io import file_stem, read_image, write_mask_png
from samadapt.data.volumes import read_volume, write_label_volume
from samadapt.errors import UserError


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".gif", ".tif"])
def test_read_8bit_formats(tmp_path, suffix):
    array = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (12, 1))
    path = tmp_path / f"a{suffix}"
    Image.fromarray(array).save(path)
    out = read_image(path)
    assert out.shape == array.shape and out.dtype == np.uint8
    if suffix != ".jpg":
        assert np.array_equal(out, array)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_read_tiff_bit_depths_and_channels(tmp_path, channels, dtype):
    rng = np.random.default_rng(0)
    shape = (9, 7) if channels == 1 else (9, 7, channels)
    array = rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)
    path = tmp_path / "a.tif"
    options = {"photometric": "rgb" if channels >= 3 else "minisblack"}
    if channels > 1:
        options["planarconfig"] = "contig"  # samples interleaved: (H, W, C), one page
    tifffile.imwrite(path, array, **options)
    out = read_image(path)
    assert out.dtype == dtype and np.array_equal(out, array)


def test_read_16bit_png(tmp_path):
    array = (np.arange(64, dtype=np.uint16) * 1000).reshape(8, 8)
    Image.fromarray(array).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint16 and np.array_equal(out, array)


def test_palette_png_keeps_indices_for_masks(tmp_path):
    mask = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    image = Image.fromarray(mask, mode="L").convert("P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    image.save(tmp_path / "m.png")
    assert np.array_equal(read_image(tmp_path / "m.png", keep_indices=True), mask)
    assert read_image(tmp_path / "m.png").shape == (2, 2, 3)


@pytest.mark.parametrize("content,message", [(b"", "empty"), (b"not an image at all", "image")])
def test_broken_files_raise_user_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(UserError, match="broken.png") as info:
        read_image(path)
    assert message in str(info.value)


def test_truncated_png_is_a_user_error(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="t.png"):
        read_image(tmp_path / "t.png")


def test_unsupported_extension(tmp_path):
    (tmp_path / "a.xyz").write_bytes(b"123")
    with pytest.raises(UserError, match="a.xyz.*unsupported"):
        read_image(tmp_path / "a.xyz")


def _nifti(path, data, affine=None):
    affine = np.diag([0.5, 0.7, 2.0, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(data, affine), str(path))


def test_nifti_roundtrip_keeps_geometry(tmp_path):
    affine = np.array([[0.5, 0, 0, 10], [0, 0.7, 0, -3], [0, 0, 2.0, 5], [0, 0, 0, 1]])
    _nifti(tmp_path / "img.nii.gz", np.random.default_rng(0).random((6, 5, 4)).astype(np.float32), affine)
    volume = read_volume(tmp_path / "img.nii.gz")
    assert volume.shape == (6, 5, 4) and np.allclose(volume.affine, affine)
    assert volume.spacing == pytest.approx((0.5, 0.7, 2.0))
    labels = np.zeros((6, 5, 4), dtype=np.uint8)
    labels[1:3, 2:4, 1] = 2
    write_label_volume(tmp_path / "lab.nii.gz", labels, volume)
    back = nib.load(str(tmp_path / "lab.nii.gz"))
    assert np.allclose(back.affine, affine) and back.get_data_dtype() == np.uint8
    assert np.array_equal(np.asanyarray(back.dataobj), labels)
    # gzip header without a timestamp: identical inputs give identical bytes
    write_label_volume(tmp_path / "lab2.nii.gz", labels, volume)
    assert (tmp_path / "lab.nii.gz").read_bytes() == (tmp_path / "lab2.nii.gz").read_bytes()


def test_nifti_nan_and_4d_are_user_errors(tmp_path):
    data = np.ones((4, 4, 3), dtype=np.float32)
    data[1, 1, 1] = np.nan
    _nifti(tmp_path / "nan.nii", data)
    with pytest.raises(UserError, match="nan.nii.*NaN"):
        read_volume(tmp_path / "nan.nii")
    _nifti(tmp_path / "four.nii.gz", np.ones((4, 4, 3, 2), dtype=np.float32))
    with pytest.raises(UserError, match="four.nii.gz.*3D"):
        read_volume(tmp_path / "four.nii.gz")
    _nifti(tmp_path / "single.nii.gz", np.ones((4, 4, 3, 1), dtype=np.float32))
    assert read_volume(tmp_path / "single.nii.gz").shape == (4, 4, 3)


def test_truncated_nifti_is_a_user_error(tmp_path):
    _nifti(tmp_path / "v.nii.gz", np.random.default_rng(0).random((8, 8, 8)).astype(np.float32))
    data = (tmp_path / "v.nii.gz").read_bytes()
    (tmp_path / "v.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="v.nii.gz"):
        read_volume(tmp_path / "v.nii.gz")
    (tmp_path / "z.nii.gz").write_bytes(gzip.compress(b"rubbish"))
    with pytest.raises(UserError, match="z.nii.gz"):
        read_volume(tmp_path / "z.nii.gz")


def test_mask_png_roundtrip_and_bad_values(tmp_path):
    mask = np.array([[0, 3], [1, 2]], dtype=np.int64)
    write_mask_png(tmp_path / "m.png", mask)
    assert np.array_equal(read_image(tmp_path / "m.png", keep_indices=True), mask)
    with pytest.raises(UserError, match="0..255"):
        write_mask_png(tmp_path / "bad.png", mask + 300)
    assert not (tmp_path / "bad.png").exists()


def test_file_stem_handles_double_suffix():
    assert file_stem("a/b/hippo_001.nii.gz") == "hippo_001" and file_stem("x.PNG") == "x"
