"""samadapt datasets in nnU-Net v2's raw format, and nnU-Net's predictions back as samadapt masks.

One run holds its own private nnU-Net tree (`raw/`, `preprocessed/`, `results/`), so the dataset id
is always 1 and nothing is shared with other runs or with the user's own nnU-Net folders.

    raw/Dataset001_<name>/imagesTr/<case>_0000.nii.gz   one file per channel (_0000, _0001, ...)
                          labelsTr/<case>.nii.gz        index labels 0..K, samadapt's class order
                          imagesTs/<case>_0000.nii.gz   the cases to predict and score
                          dataset.json

Every file is NIfTI: 2D images become 2D NIfTI images (nnU-Net's SimpleITK reader treats them as
2D); volumes of any input format are written in samadapt's canonical (RAS+) voxel order with their
affine, so predictions come back on the grid of `Case.load_mask()`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from samadapt.data.dataset import Case, Dataset
from samadapt.errors import UserError

DATASET_ID = 1
FILE_ENDING = ".nii.gz"


def dataset_folder_name(dataset: Dataset) -> str:
    """nnU-Net's folder name: DatasetXXX_Name, the name reduced to letters, digits and underscores."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", dataset.name).strip("_") or "samadapt"
    return f"Dataset{DATASET_ID:03d}_{name}"


def _split_channels(image: np.ndarray, spatial_dims: int) -> list[np.ndarray]:
    """An image with or without a trailing channel axis as a list of single-channel arrays."""
    return [image] if image.ndim == spatial_dims else [image[..., c] for c in range(image.shape[-1])]


def _image_channels(case: Case) -> list[np.ndarray]:
    """The case's image as single-channel arrays: (H, W) for 2D, (X, Y, Z) for volumes."""
    return _split_channels(case.load_image(), 3 if case.dims == "3d" else 2)


def check_convertible(dataset: Dataset, train: list[Case], scored: list[Case]) -> int:
    """Refuse, in one line, what nnU-Net cannot train on; return the number of channels."""
    if not train:
        raise UserError("the training part of this fold has no labelled case", dataset.spec.source)
    channels = {}
    for case in train + scored:
        channels.setdefault(len(_image_channels(case)), case)
    if len(channels) > 1:
        (n1, first), (n2, second) = list(channels.items())[:2]
        raise UserError(f"nnU-Net needs one channel count for every case: {first.id} has {n1}, "
                        f"{second.id} has {n2}", second.image)
    present = np.zeros(len(dataset.class_names) + 1, dtype=bool)
    for case in train:
        present[np.unique(case.load_mask())] = True
    missing = [name for name, seen in zip(dataset.class_names, present[1:]) if not seen]
    if missing:
        raise UserError(f"classes {missing} have no pixel in the training part of this fold; nnU-Net cannot "
                        "learn a class it never sees (choose another fold or split)", dataset.spec.source)
    return next(iter(channels))


def _write_nifti(path: Path, array: np.ndarray, like, label: bool) -> None:
    """One image channel or label map as NIfTI: a volume with `like`'s affine (a `Volume`), or a 2D
    image (`like` None)."""
    data = array.astype(np.uint8) if label else np.asarray(array, dtype=np.float32)
    if like is not None:
        from samadapt.data.volumes import Volume, write_volume

        # in samadapt's canonical voxel order (the grid of load_image/load_mask), image and label alike;
        # predictions come back on it and are written in the input's own geometry by the caller
        write_volume(path, Volume(data, like.affine, like.header))
        return
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(data), str(path), True)


def resized_shape(shape: tuple[int, int], image_size: int) -> tuple[int, int]:
    """(H, W) scaled so the longer side is `image_size`, the aspect ratio kept."""
    scale = image_size / max(shape)
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def resample_2d(array: np.ndarray, shape: tuple[int, int], label: bool) -> np.ndarray:
    """A 2D image (antialiased bilinear) or label map (nearest) resampled to `shape`."""
    import torch
    import torch.nn.functional as F

    if tuple(array.shape) == tuple(shape):
        return array
    grid = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]  # (1, 1, H, W)
    if label:
        return F.interpolate(grid, size=shape, mode="nearest-exact")[0, 0].numpy().astype(array.dtype)
    return F.interpolate(grid, size=shape, mode="bilinear", antialias=True, align_corners=False)[0, 0].numpy()


def _write_case(folder: Path, case: Case, with_label: bool, image_size: int | None = None) -> None:
    """The case's image channels into imagesTr/imagesTs (and its label into labelsTr), the image read once;
    2D cases resampled to `image_size` (longer side) when given."""
    images = folder / ("imagesTr" if with_label else "imagesTs")
    images.mkdir(parents=True, exist_ok=True)
    if case.dims == "3d":
        from samadapt.data.volumes import read_volume

        like = read_volume(case.image)  # what Case.load_image reads, kept for its geometry
        channels = _split_channels(like.data, 3)
    else:
        like, channels = None, _image_channels(case)
        if image_size is not None:
            shape = resized_shape(channels[0].shape, image_size)
            channels = [resample_2d(channel, shape, label=False) for channel in channels]
    for index, channel in enumerate(channels):
        _write_nifti(images / f"{case.id}_{index:04d}{FILE_ENDING}", channel, like, label=False)
    if with_label:
        (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
        mask = case.load_mask()
        if like is None and image_size is not None:
            mask = resample_2d(mask, resized_shape(mask.shape, image_size), label=True)
        _write_nifti(folder / "labelsTr" / f"{case.id}{FILE_ENDING}", mask, like, label=True)


def write_raw_dataset(raw_root: Path, dataset: Dataset, train: list[Case], scored: list[Case], n_channels: int,
                      image_size: int | None = None) -> Path:
    """Write the raw nnU-Net dataset (training cases with labels, scored cases without) and return its folder."""
    folder = raw_root / dataset_folder_name(dataset)
    for case in train:
        _write_case(folder, case, with_label=True, image_size=image_size)
    for case in scored:
        _write_case(folder, case, with_label=False, image_size=image_size)
    modality = dataset.spec.modality
    # nnU-Net normalises "CT" channels with dataset-wide percentiles and every other name per image
    channel_names = {str(c): ("CT" if modality.lower() == "ct" else f"{modality}_{c}") for c in range(n_channels)}
    labels = {"background": 0, **{name: index for index, name in enumerate(dataset.class_names, start=1)}}
    description = {"channel_names": channel_names, "labels": labels, "numTraining": len(train),
                   "file_ending": FILE_ENDING, "name": dataset.name}
    (folder / "dataset.json").write_text(json.dumps(description, indent=1) + "\n")
    return folder


def read_prediction(path: Path, case: Case, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """nnU-Net's predicted label file for `case`, on the grid of `case.load_mask()` (of `shape`, when
    the 2D images were resampled for nnU-Net)."""
    if not path.is_file():
        raise FileNotFoundError(f"nnU-Net wrote no prediction for case {case.id}: {path}")
    if case.dims == "3d":
        from samadapt.data.volumes import read_volume

        return np.asarray(read_volume(path).data).astype(np.uint8)
    import SimpleITK as sitk

    prediction = np.squeeze(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).astype(np.uint8)
    return prediction if shape is None else resample_2d(prediction, tuple(shape), label=True)
