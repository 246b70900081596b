"""Every mask layout becomes the same index mask."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from samadapt.data.masks import ClassInfo, MaskLayout, decode_mask, load_index_mask, remap_classes
from samadapt.errors import UserError

TRUTH = np.array([[0, 1, 1], [2, 2, 0], [0, 0, 2]], dtype=np.uint8)


def _save(path, array):
    Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize("foreground", [1, 255])
def test_binary(tmp_path, foreground):
    path = _save(tmp_path / "m.png", ((TRUTH > 0) * foreground).astype(np.uint8))
    mask = load_index_mask([path], MaskLayout("binary", (ClassInfo("lesion"),)))
    assert np.array_equal(mask, (TRUTH > 0).astype(np.uint8))


def test_index_with_value_remapping_and_unknown_values(tmp_path):
    raw = np.where(TRUTH == 1, 7, np.where(TRUTH == 2, 3, 0)).astype(np.uint8)
    raw[0, 0] = 9  # not in the class list
    path = _save(tmp_path / "m.png", raw)
    layout = MaskLayout("index", (ClassInfo("a", value=7), ClassInfo("b", value=3)))
    decoded = decode_mask([path], layout)
    assert np.array_equal(decoded.mask, TRUTH) and decoded.unknown_values == (9,)
    with pytest.raises(UserError, match="m.png.*outside the class list: 9"):
        load_index_mask([path], layout)


def test_color(tmp_path):
    colours = {1: (255, 0, 0), 2: (0, 128, 255)}
    rgb = np.zeros((3, 3, 3), dtype=np.uint8)
    for index, colour in colours.items():
        rgb[TRUTH == index] = colour
    path = _save(tmp_path / "m.png", rgb)
    layout = MaskLayout("color", tuple(ClassInfo(f"c{i}", color=c) for i, c in colours.items()))
    assert np.array_equal(load_index_mask([path], layout), TRUTH)


def test_folders_later_class_wins_and_missing_structure(tmp_path):
    (tmp_path / "big").mkdir()
    (tmp_path / "small").mkdir()
    big = _save(tmp_path / "big" / "x.png", np.full((3, 3), 255, dtype=np.uint8))
    small = _save(tmp_path / "small" / "x.png", ((TRUTH == 2) * 255).astype(np.uint8))
    layout = MaskLayout("folders", (ClassInfo("big", folder="big"), ClassInfo("small", folder="small")))
    decoded = decode_mask([big, small], layout)
    assert np.array_equal(decoded.mask, np.where(TRUTH == 2, 2, 1)) and decoded.overlap_pixels == 3
    assert np.array_equal(decode_mask([None, small], layout).mask, (TRUTH == 2) * 2)


def test_nifti_labels(tmp_path):
    import nibabel as nib

    labels = np.stack([TRUTH, TRUTH[::-1]], axis=-1)
    nib.save(nib.Nifti1Image(labels, np.eye(4)), str(tmp_path / "l.nii.gz"))
    layout = MaskLayout("nifti", (ClassInfo("a", value=1), ClassInfo("b", value=2)))
    assert np.array_equal(load_index_mask([tmp_path / "l.nii.gz"], layout), labels)


def test_layout_validation():
    with pytest.raises(UserError, match="value"):
        MaskLayout("index", (ClassInfo("a"),))
    with pytest.raises(UserError, match="unique"):
        MaskLayout("folders", (ClassInfo("a", folder="a"), ClassInfo("a", folder="b")))


def test_remap_classes_by_name():
    assert np.array_equal(remap_classes(TRUTH, ["a", "b"], ["b"]), (TRUTH == 2).astype(np.uint8))
    assert np.array_equal(remap_classes(TRUTH, ["a", "b"], ["b", "a"]), np.array([0, 2, 1])[TRUTH])
