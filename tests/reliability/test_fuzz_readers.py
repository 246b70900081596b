"""Property-based fuzzing of the file readers: any bytes under any supported name either decode
to a valid array or raise `UserError`; no other exception escapes.

Inputs are random bytes and mutations (flipped bytes, truncation, spliced garbage, overwritten
header fields) of small valid files of every supported format. The number of examples and the
per-example deadline are bounded so the whole file runs in well under a minute on one core.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samadapt.data.io import read_image
from samadapt.data.volumes import read_volume, read_volume_shape
from samadapt.data.masks import ClassInfo, MaskLayout, decode_mask
from samadapt.errors import UserError

# 300 fixed-seed examples per property (a few seconds). A longer, randomised campaign:
#   FUZZ_EXAMPLES=3000 FUZZ_RANDOM=1 pytest tests/reliability/test_fuzz_readers.py
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 300)), deadline=2000, derandomize="FUZZ_RANDOM" not in os.environ, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _pillow_bytes(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(array)
    if kwargs.pop("palette", False):
        image = image.convert("P")
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _tiff_bytes(array: np.ndarray, **kwargs) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)
    return buffer.getvalue()


def _nifti_bytes(array: np.ndarray, gz: bool) -> bytes:
    import nibabel as nib

    raw = nib.Nifti1Image(array, np.diag([0.8, 0.8, 2.0, 1.0])).to_bytes()
    return gzip.compress(raw, mtime=0) if gz else raw


def _valid_files() -> dict[str, list[tuple[str, bytes]]]:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 255, (12, 10), dtype=np.uint8)
    rgb = rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)
    mask = np.zeros((12, 10), np.uint8)
    mask[3:8, 2:6] = 1
    mask[8:, 6:] = 2
    images = [
        (".png", _pillow_bytes(grey, "PNG")),
        (".png", _pillow_bytes(rgb, "PNG")),
        (".png", _pillow_bytes(rng.integers(0, 65535, (12, 10), dtype=np.uint16), "PNG")),
        (".png", _pillow_bytes(rgb, "PNG", palette=True)),
        (".jpg", _pillow_bytes(rgb, "JPEG", quality=80)),
        (".jpeg", _pillow_bytes(grey, "JPEG")),
        (".gif", _pillow_bytes(rgb, "GIF")),
        (".bmp", _pillow_bytes(rgb, "BMP")),
        (".tif", _tiff_bytes(grey)),
        (".tiff", _tiff_bytes(rng.random((12, 10), dtype=np.float32))),
        (".tif", _tiff_bytes(rng.integers(0, 255, (3, 12, 10), dtype=np.uint8), planarconfig="separate",
                             photometric="rgb")),
        (".tif", _pillow_bytes(rgb, "TIFF", compression="tiff_lzw")),
    ]
    volume = rng.normal(size=(6, 5, 4)).astype(np.float32)
    volumes = [
        (".nii", _nifti_bytes(volume, gz=False)),
        (".nii.gz", _nifti_bytes(volume, gz=True)),
        (".nii.gz", _nifti_bytes(rng.integers(0, 4, (6, 5, 4)).astype(np.uint8), gz=True)),
    ]
    masks = [
        (".png", _pillow_bytes(mask, "PNG")),
        (".png", _pillow_bytes(mask * 127, "PNG")),
        (".png", _pillow_bytes(np.stack([mask * 255, mask * 0, mask * 100], -1), "PNG")),
        (".gif", _pillow_bytes(mask, "GIF")),
        (".bmp", _pillow_bytes(mask, "BMP")),
        (".tif", _tiff_bytes(mask)),
    ]
    return {"image": images, "volume": volumes, "mask": masks}


VALID = _valid_files()


@st.composite
def mutated(draw, kind: str):
    """(suffix, bytes): a valid file of `kind` changed in one to three places."""
    suffix, data = draw(st.sampled_from(VALID[kind]))
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["flip", "truncate", "splice", "overwrite", "header"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "truncate":
            del data[at:]
        elif action == "splice":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif action == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[at:at + len(chunk)] = chunk
        else:  # size and type fields live near the start of every format
            at = draw(st.integers(0, min(len(data), 360) - 1))
            data[at] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
    return suffix, bytes(data)


def random_bytes(suffixes: list[str]):
    return st.tuples(st.sampled_from(suffixes), st.binary(min_size=0, max_size=512))


IMAGE_SUFFIXES = sorted({s for s, _ in VALID["image"]})
VOLUME_SUFFIXES = [".nii", ".nii.gz"]
LAYOUTS = [
    MaskLayout("binary", (ClassInfo("lesion"),)),
    MaskLayout("index", (ClassInfo("a", value=1), ClassInfo("b", value=2))),
    MaskLayout("color", (ClassInfo("red", color=(255, 0, 100)),)),
]
NIFTI_LAYOUT = MaskLayout("nifti", (ClassInfo("a", value=1), ClassInfo("b", value=2), ClassInfo("c", value=3)))


@pytest.fixture
def write(tmp_path):
    def _write(suffix: str, data: bytes) -> Path:
        path = tmp_path / f"fuzzed{suffix}"
        path.write_bytes(data)
        return path

    return _write


def check_image(array: np.ndarray) -> None:
    assert isinstance(array, np.ndarray)
    assert array.ndim == 2 or (array.ndim == 3 and 1 <= array.shape[-1] <= 4)
    assert min(array.shape[:2]) >= 1
    if array.dtype.kind == "f":
        assert np.isfinite(array).all()


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _must_be_user_error_or(fn, check) -> None:
    """`fn()` passes `check` or raises a one-line `UserError`, and prints no warnings or log lines
    on the way (the CLI's stderr must hold only its one error line)."""
    logs = _Records()
    logging.getLogger().addHandler(logs)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = fn()
            except UserError as exc:
                assert "\n" not in str(exc) and str(exc)
                result = None
    finally:
        logging.getLogger().removeHandler(logs)
    assert not caught, [str(w.message) for w in caught]
    assert not logs.records, [r.getMessage() for r in logs.records]
    if result is not None:
        check(result)


@FUZZ
@given(st.one_of(mutated("image"), random_bytes(IMAGE_SUFFIXES)), st.booleans())
def test_read_image_returns_an_image_or_a_user_error(write, sample, keep_indices):
    path = write(*sample)
    _must_be_user_error_or(lambda: read_image(path, keep_indices=keep_indices), check_image)


@FUZZ
@given(st.one_of(mutated("volume"), random_bytes(VOLUME_SUFFIXES)))
def test_read_volume_returns_a_3d_volume_or_a_user_error(write, sample):
    path = write(*sample)

    def check(volume) -> None:
        assert volume.data.ndim == 3 and volume.affine.shape == (4, 4)
        if volume.data.dtype.kind == "f":
            assert np.isfinite(volume.data).all()

    _must_be_user_error_or(lambda: read_volume(path), check)
    _must_be_user_error_or(lambda: read_volume_shape(path), lambda shape: all(int(s) >= 0 for s in shape))


@FUZZ
@given(st.one_of(mutated("mask"), mutated("image"), random_bytes([".png", ".tif", ".gif", ".bmp"])),
       st.sampled_from(LAYOUTS))
def test_mask_decoding_returns_an_index_mask_or_a_user_error(write, sample, layout):
    path = write(*sample)

    def check(decoded) -> None:
        assert decoded.mask.dtype == np.uint8 and decoded.mask.ndim == 2
        assert int(decoded.mask.max(initial=0)) <= len(layout.classes)

    _must_be_user_error_or(lambda: decode_mask([path], layout), check)


@FUZZ
@given(st.one_of(mutated("volume"), random_bytes(VOLUME_SUFFIXES)))
def test_label_volume_decoding_returns_labels_or_a_user_error(write, sample):
    path = write(*sample)

    def check(decoded) -> None:
        assert decoded.mask.dtype == np.uint8 and decoded.mask.ndim == 3
        assert int(decoded.mask.max(initial=0)) <= 3

    _must_be_user_error_or(lambda: decode_mask([path], NIFTI_LAYOUT), check)


def test_every_seed_file_is_valid(write):
    """The mutations start from files the readers accept, so they probe real decoding paths."""
    for suffix, data in VALID["image"] + VALID["mask"]:
        check_image(read_image(write(suffix, data)))
    for suffix, data in VALID["volume"]:
        assert read_volume(write(suffix, data)).data.shape == (6, 5, 4)


def test_header_declaring_a_huge_image_is_refused_before_decoding(write):
    """Found by fuzzing: a BMP whose header claims 20000 x 20000 pixels (Pillow's bomb check)."""
    data = bytearray(dict(VALID["image"])[".bmp"])
    data[18:26] = (20000).to_bytes(4, "little") * 2  # width and height fields
    with pytest.raises(UserError, match="too large"):
        read_image(write(".bmp", bytes(data)))
