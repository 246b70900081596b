"""How a volume's intensities become the [0, 1] range the encoder sees: part of the dataset
description (`intensity:`), applied the same way by the few-shot cache, fine-tuning, few-shot
training and prediction, and recorded with every cache entry and run.

    percentile              clip to the volume's own 0.5 and 99.5 percentiles (the default; MR)
    percentile:LOW-HIGH     other percentiles, e.g. percentile:1-99
    ct:soft_tissue          a CT window preset in Hounsfield units (level/width below)
    ct:LEVEL/WIDTH          a custom CT window, e.g. ct:50/350 or ct:-600/1500

A CT window maps LEVEL - WIDTH/2 .. LEVEL + WIDTH/2 HU linearly onto 0..1 and clips outside. The
voxel values must be in HU: SimpleITK applies DICOM's rescale slope/intercept on reading, and
NIfTI/NRRD exports of CT usually store HU.
"""

from __future__ import annotations

import re

import numpy as np

from samadapt.errors import UserError

# (level, width) in HU; the usual radiology presets.
CT_WINDOWS = {"soft_tissue": (40.0, 400.0), "lung": (-600.0, 1500.0), "bone": (400.0, 1800.0), "brain": (40.0, 80.0)}
DEFAULT_INTENSITY = "percentile:0.5-99.5"
_NUMBER = r"-?\d+(?:\.\d+)?"
_PERCENTILE = re.compile(rf"percentile:({_NUMBER})-({_NUMBER})")
_WINDOW = re.compile(rf"ct:({_NUMBER})/({_NUMBER})")
SYNTAX = "percentile, percentile:LOW-HIGH, ct:" + "|".join(CT_WINDOWS) + " or ct:LEVEL/WIDTH"


def _number(text: str) -> str:
    return f"{float(text):g}"


def parse_intensity(text, source=None) -> str:
    """The canonical spelling of an intensity setting (what runs and caches record)."""
    value = str(text).strip().lower().replace(" ", "")
    if value == "percentile":
        return DEFAULT_INTENSITY
    if value.startswith("ct:") and value[3:] in CT_WINDOWS:
        return value
    if match := _PERCENTILE.fullmatch(value):
        low, high = float(match.group(1)), float(match.group(2))
        if not 0 <= low < high <= 100:
            raise UserError(f"intensity {text!r}: percentiles need 0 <= LOW < HIGH <= 100", source)
        return f"percentile:{_number(match.group(1))}-{_number(match.group(2))}"
    if match := _WINDOW.fullmatch(value):
        if float(match.group(2)) <= 0:
            raise UserError(f"intensity {text!r}: the window width must be positive", source)
        return f"ct:{_number(match.group(1))}/{_number(match.group(2))}"
    raise UserError(f"intensity {text!r}: use {SYNTAX}", source)


def scale_volume(volume: np.ndarray, intensity: str = DEFAULT_INTENSITY) -> np.ndarray:
    """float32 in [0, 1] of a volume, as `intensity` (a `parse_intensity` spelling) says."""
    from samadapt.data.preprocess import clip_percentiles

    intensity = parse_intensity(intensity)
    if intensity.startswith("percentile:"):
        low, high = (float(v) for v in _PERCENTILE.fullmatch(intensity).groups())
        return clip_percentiles(volume, low, high)
    if intensity[3:] in CT_WINDOWS:
        level, width = CT_WINDOWS[intensity[3:]]
    else:
        level, width = (float(v) for v in _WINDOW.fullmatch(intensity).groups())
    lowest = level - width / 2
    return np.clip((np.asarray(volume, dtype=np.float32) - lowest) / width, 0.0, 1.0).astype(np.float32)


def check_same_intensity(recorded: str | None, wanted: str, what: str, where) -> None:
    """Refuse data prepared with another intensity setting than a run or cache was made with."""
    recorded = recorded or DEFAULT_INTENSITY  # made before the setting existed: the default then
    if recorded != wanted:
        raise UserError(f"{what} was prepared with intensity {recorded!r} but the data says {wanted!r}: "
                        "use the same `intensity:` in the dataset description, or rebuild", where)
