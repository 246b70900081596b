"""Read 2D images into numpy, write masks back, and find the image and volume files of a folder.

Volumes (NIfTI, NRRD, MHA, DICOM) are read and written by `samadapt.data.volumes`.

Every reader turns a broken input (missing, zero-byte, truncated or corrupt file, unsupported
extension, NaN/Inf voxels, a 4D volume where 3D is expected) into a `UserError` naming the file,
so the CLI can report it in one line. Writers go through `samadapt.engine.atomic`, so a failure
never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from samadapt.data import dicom
from samadapt.engine.atomic import atomic_write_bytes
from samadapt.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp")
# A DICOM series is a folder (see `is_volume_file`); `.dcm` files are multi-frame volumes.
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
SUPPORTED_SUFFIXES = IMAGE_SUFFIXES + VOLUME_SUFFIXES


def file_suffix(path: str | Path) -> str:
    """Lower-case extension, treating `.nii.gz` as one suffix."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def file_stem(path: str | Path) -> str:
    """File name without its (possibly double, `.nii.gz`) extension; a folder's (DICOM series) name."""
    name = Path(path).name
    if Path(path).is_dir():
        return name
    suffix = file_suffix(path)
    return name[: len(name) - len(suffix)] if suffix else name


def is_image_file(path: str | Path) -> bool:
    return file_suffix(path) in IMAGE_SUFFIXES and not Path(path).name.startswith(".")


def is_volume_file(path: str | Path) -> bool:
    """A volume file by its suffix, or a folder holding the slices of a DICOM series."""
    path = Path(path)
    if path.is_dir():
        return dicom.is_series_folder(path)
    return file_suffix(path) in VOLUME_SUFFIXES and not path.name.startswith(".")


def list_files(folder: str | Path, volumes: bool | None = None, recursive: bool = False) -> list[Path]:
    """Sorted image (volumes=False), volume (True) or both (None) files in `folder`.

    With volumes, a sub-folder holding DICOM slices is one volume (not searched further), and so is
    `folder` itself when it holds them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError("folder not found", folder)
    if volumes is not False and dicom.is_series_folder(folder):
        return [folder]
    found = []
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            if volumes is not False and dicom.is_series_folder(path):
                found.append(path)
            elif recursive and not path.name.startswith("."):
                found += list_files(path, volumes, recursive)
        elif path.is_file() and ((volumes is not True and is_image_file(path))
                                 or (volumes is not False and is_volume_file(path))):
            found.append(path)
    return sorted(found)


def _check_file(path: Path, suffixes: tuple[str, ...]) -> None:
    if file_suffix(path) not in suffixes:
        raise UserError(f"unsupported file type {file_suffix(path) or '(no extension)'!r}; "
                        f"expected one of {', '.join(suffixes)}", path)
    if not path.is_file():
        raise UserError("file not found", path)
    if path.stat().st_size == 0:
        raise UserError("file is empty (0 bytes)", path)


# Declared sizes are checked before decoding, so a damaged or hostile header cannot make a reader
# allocate gigabytes; Pillow refuses the same size (its decompression-bomb limit).
MAX_IMAGE_PIXELS = 2 * 89_478_485


_DECODER_LOGGERS = ("tifffile", "nibabel", "nibabel.global", "PIL.Image", "PIL.ImageFile", "PIL.TiffImagePlugin",
                    "PIL.TiffTags", "PIL.PngImagePlugin", "PIL.JpegImagePlugin", "PIL.GifImagePlugin",
                    "PIL.BmpImagePlugin")


@contextlib.contextmanager
def _quiet_decoders() -> Iterator[None]:
    """Keep the decoders' complaints about damaged files off stderr: the `UserError` says it once."""
    loggers = [logging.getLogger(name) for name in _DECODER_LOGGERS]
    disabled = [log.disabled for log in loggers]
    for log in loggers:
        log.disabled = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, was in zip(loggers, disabled):
            log.disabled = was


def _read_tiff_array(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        shape = tuple(int(n) for n in tiff.pages[0].shape)
        if np.prod(shape, dtype=np.float64) > 4 * MAX_IMAGE_PIXELS:  # up to 4 channels
            raise UserError(f"image of shape {shape} is too large (over {MAX_IMAGE_PIXELS} pixels; "
                            "damaged header?)", path)
        return tiff.asarray(key=0)


def _read_tiff(path: Path) -> np.ndarray:
    try:
        with _quiet_decoders():
            array = _read_tiff_array(path)
    except UserError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        # Compressed TIFFs (LZW, Deflate...) need the optional imagecodecs package for tifffile;
        # Pillow decodes the common 8-bit ones itself, so try it before giving up.
        try:
            return _read_with_pillow(path, keep_indices=False)
        except UserError:
            raise UserError(f"cannot read TIFF ({type(exc).__name__}: {exc})", path) from None
    array = np.asarray(array)
    # Planar (C, H, W) TIFFs: move the small channel axis last.
    if array.ndim == 3 and array.shape[0] <= 4 < array.shape[-1]:
        array = np.moveaxis(array, 0, -1)
    return array


def _palette_target(image) -> str:
    """Grey palettes (GIFs saved from greyscale) decode to L, others to RGB(A)."""
    if "transparency" in image.info:
        return "RGBA"
    palette = np.asarray(image.getpalette() or [], dtype=np.int32).reshape(-1, 3)
    used = np.unique(np.asarray(image))
    used = used[used < len(palette)]
    grey = len(palette) and np.all(palette[used, 0] == palette[used, 1]) and np.all(palette[used, 1] == palette[used, 2])
    return "L" if grey else "RGB"


def _read_with_pillow(path: Path, keep_indices: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with _quiet_decoders(), Image.open(path) as image:
            image.seek(0)  # first frame of an animated GIF or multi-page file
            image.load()  # decodes now, so truncation is detected here and not later
            if image.mode == "P" and not keep_indices:
                image = image.convert(_palette_target(image))
            elif image.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
                image = image.convert("L" if image.mode == "1" else "RGB")
            elif image.mode == "PA":
                image = image.convert("P").convert("L") if keep_indices else image.convert("RGBA")
            array = np.array(image)
    except UnidentifiedImageError:
        raise UserError("not a readable image (corrupt or wrong extension)", path) from None
    except Image.DecompressionBombError:
        raise UserError(f"image is too large (over {MAX_IMAGE_PIXELS} pixels; damaged header?)", path) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"cannot decode image ({exc})", path) from None
    if array.dtype == np.int32 and array.size and array.min() >= 0 and array.max() <= 65535:
        array = array.astype(np.uint16)  # 16-bit PNGs open in Pillow's 32-bit integer mode
    return array


def read_image(path: str | Path, keep_indices: bool = False) -> np.ndarray:
    """Read a 2D image file.

    Args:
        path: PNG, JPEG, TIFF, GIF or BMP file.
        keep_indices: return palette images as their raw indices (for index masks) instead of RGB.
    Returns:
        (H, W) or (H, W, C) array with C in 1..4, dtype as stored (uint8, uint16, float32...).
    """
    path = Path(path)
    _check_file(path, IMAGE_SUFFIXES)
    if file_suffix(path) in (".tif", ".tiff"):
        array = _read_tiff(path)
    else:
        array = _read_with_pillow(path, keep_indices)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and not 1 <= array.shape[-1] <= 4) or min(array.shape[:2]) < 1:
        raise UserError(f"expected a 2D image with 1-4 channels, found shape {array.shape}", path)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise UserError("image contains NaN or infinite values", path)
    return array


def png_bytes(array: np.ndarray) -> bytes:
    """Encode an (H, W) or (H, W, 3|4) uint8/uint16 array as PNG bytes (deterministic).

    zlib level 1 rather than Pillow's default 6: much faster and, on real FA frames and overlays,
    no larger, so writing stays small next to the encoder (measured in docs/benchmarks.md, "Plain
    encoder and predict pipeline")."""
    from PIL import Image

    array = np.ascontiguousarray(array)
    if array.dtype == np.uint16 and array.ndim == 2:
        image = Image.fromarray(array.astype(np.uint16), mode=None)
    else:
        image = Image.fromarray(array.astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=1)
    return buffer.getvalue()


def write_mask_png(path: str | Path, mask: np.ndarray) -> None:
    """Write an (H, W) index mask (values 0..255) as an 8-bit greyscale PNG."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise UserError(f"a mask PNG needs a 2D (H, W) array, got shape {mask.shape}", path)
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise UserError("mask values must be in 0..255 for PNG", path)
    if Path(path).suffix.lower() != ".png":
        raise UserError("mask files are written as .png", path)
    atomic_write_bytes(path, png_bytes(mask.astype(np.uint8)))


def write_image_png(path: str | Path, image: np.ndarray) -> None:
    """Write an (H, W) or (H, W, 3) uint8 image as PNG."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise UserError(f"PNG images are written from uint8 arrays, got {image.dtype}", path)
    atomic_write_bytes(path, png_bytes(image))
