"""Preprocessing, torch datasets, augmentation and phantoms."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from data_fixtures import anatomy_volumes, fa_phantoms  # noqa: F401  (fixtures)

from samadapt.cli import main
from samadapt.data.augment import build_augmentation
from samadapt.data.dataset import load_dataset
from samadapt.data.phantoms import fa_phantom_frames, generate_phantoms
from samadapt.data.preprocess import (
    Letterbox,
    clip_percentiles,
    letterbox_mask,
    prepare_image,
    stack_slices,
    to_unit_range,
    volume_slices,
)
from samadapt.data.torch_datasets import SegmentationDataset, UnlabeledImageDataset


def restore_mask(mask: torch.Tensor, box: Letterbox) -> np.ndarray:
    """The inverse of `letterbox_mask`: crop the padding, back to the original grid (nearest)."""
    tensor = mask.float()[None, None][..., : box.resized_hw[0], : box.resized_hw[1]]
    return F.interpolate(tensor, size=box.original_hw, mode="nearest-exact")[0, 0].round().to(torch.uint8).numpy()


def test_mask_letterbox_roundtrip_is_exact_when_upscaling():
    mask = np.random.default_rng(0).integers(0, 4, (30, 20)).astype(np.uint8)
    box = Letterbox.fit(30, 20, 60)
    square = letterbox_mask(mask, box)
    assert square.shape == (60, 60) and square.dtype == torch.int64
    assert square[:, 40:].eq(0).all()  # padding is background
    assert np.array_equal(restore_mask(square, box), mask)


def test_16bit_and_percentile_scaling():
    image16 = (np.arange(100, dtype=np.uint16).reshape(10, 10) * 600)
    unit = to_unit_range(image16)
    assert unit.min() == 0 and unit.max() == 1 and np.all(np.diff(unit.ravel()) > 0)
    tensor, _ = prepare_image(image16, 16)
    assert tensor.shape == (3, 16, 16) and torch.isfinite(tensor).all()
    volume = np.random.default_rng(0).normal(100, 10, (20, 20, 10)).astype(np.float32)
    volume[0, 0, 0] = 1e6  # one hot voxel must not squash the rest
    scaled = clip_percentiles(volume)
    assert scaled.dtype == np.float32 and scaled.min() == 0 and scaled.max() == 1
    assert 0.3 < np.median(scaled) < 0.7


def test_slices_roundtrip():
    volume = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    for axis in range(3):
        slices = volume_slices(volume, axis)
        batches = [slices[start:start + 2] for start in range(0, slices.shape[0], 2)]
        assert np.array_equal(stack_slices(np.concatenate(batches), axis), volume)
        assert volume_slices(volume, axis).shape[0] == volume.shape[axis]


def test_segmentation_dataset_2d(fa_phantoms):
    dataset = load_dataset(fa_phantoms)
    items = SegmentationDataset(dataset, image_size=48)
    sample = items[0]
    assert sample["image"].shape == (3, 48, 48) and sample["image"].dtype == torch.float32
    assert sample["mask"].shape == (48, 48) and sample["mask"].dtype == torch.int64
    assert sample["valid"].dtype == torch.bool and sample["valid"].all()
    assert sample["case_id"] == dataset.cases[0].id
    assert set(sample["mask"].unique().tolist()) <= {0, 1}
    batch = next(iter(torch.utils.data.DataLoader(items, batch_size=4)))
    assert batch["image"].shape == (4, 3, 48, 48)


def test_segmentation_dataset_3d_slices(anatomy_volumes):
    dataset = load_dataset(anatomy_volumes)
    items = SegmentationDataset(dataset, image_size=40, classes=["core"])
    assert len(items) == 3 * 10
    sample = items[5]
    assert sample["case_id"] == "A0001:z005" and sample["image"].shape == (3, 40, 40)
    assert set(sample["mask"].unique().tolist()) <= {0, 1}  # only "core" kept, as class 1
    assert sample["mask"].sum() > 0


def test_unlabeled_dataset_mixes_folders_and_volumes(fa_phantoms, anatomy_volumes):
    items = UnlabeledImageDataset([fa_phantoms / "unlabeled", anatomy_volumes / "images" / "A0001.nii.gz"], 32)
    assert len(items) == 3 + 10
    assert items[0]["image"].shape == (3, 32, 32) and items[12]["case_id"] == "A0001:z009"


def test_augmentation_is_deterministic_and_keeps_masks_aligned():
    # A mask that is exactly where the image is bright: after any augmentation it must still be.
    image = torch.zeros(3, 64, 64)
    image[:, 20:40, 10:30] = 1.0
    mask = (image[0] > 0.5).long() * 2
    sample = {"image": image, "mask": mask, "valid": torch.ones(64, 64, dtype=torch.bool)}
    augment = build_augmentation(seed=5, rotate_degrees=20, scale=0.15, intensity=0.0, noise_std=0.0, prob=1.0)
    changed = 0
    for index in range(8):
        out = augment(sample, index)
        assert torch.equal(out["mask"], augment(sample, index)["mask"])  # same seed/index -> same result
        assert set(out["mask"].unique().tolist()) <= {0, 2}  # nearest: no invented labels
        inside = out["image"][0][out["mask"] == 2]
        outside = out["image"][0][(out["mask"] == 0) & out["valid"]]
        assert inside.mean() > 0.8 and outside.mean() < 0.2
        changed += not torch.equal(out["mask"], mask)
    assert changed >= 4


def test_augmented_dataset_items_are_reproducible(fa_phantoms):
    dataset = load_dataset(fa_phantoms)
    a = SegmentationDataset(dataset, 32, augment=build_augmentation(seed=1))
    b = SegmentationDataset(dataset, 32, augment=build_augmentation(seed=1))
    for i in range(3):
        assert torch.equal(a[i]["image"], b[i]["image"]) and torch.equal(a[i]["mask"], b[i]["mask"])


def test_phantoms_same_seed_identical_bytes(tmp_path):
    for name in ("a", "b"):
        generate_phantoms(tmp_path / name, n=3, size=48, seed=11, unlabeled=1)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 3 * 2 + 1 + 2
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    generate_phantoms(tmp_path / "c", n=3, size=48, seed=12)
    assert (tmp_path / "c" / "images" / "P0001-1.png").read_bytes() != (tmp_path / "a" / "images" / "P0001-1.png").read_bytes()


def test_fa_lesions_are_small_sparse_and_visibly_bright():
    fractions, contrasts = [], []
    for index in range(12):
        for image, mask in fa_phantom_frames(seed=0, index=index, size=128):
            fractions.append(mask.mean())
            if mask.any():
                ring = (~mask.astype(bool)) & (image > 0)
                contrasts.append(image[mask > 0].mean() - np.median(image[ring]))
    assert 0 < np.mean(fractions) < 0.05  # small and sparse
    assert min(fractions) == 0  # some eyes have no leakage
    assert np.mean(contrasts) > 30  # hyperfluorescent: clearly brighter than the background


def test_phantom_generation_is_fast():
    start = time.perf_counter()
    for index in range(5):
        fa_phantom_frames(seed=0, index=index, size=256)
    assert time.perf_counter() - start < 5.0  # 10 frames at 256 px


def test_phantom_cli_and_bad_values(tmp_path, capsys):
    assert main(["phantom", "--n", "2", "--size", "40", "--kind", "anatomy", "--out", str(tmp_path / "p")]) == 0
    assert load_dataset(tmp_path / "p").class_names == ["left_lobe", "right_lobe", "core"]
    assert main(["phantom", "--n", "2", "--kind", "bones", "--out", str(tmp_path / "q")]) == 2
    assert "bones" in capsys.readouterr().err and not (tmp_path / "q").exists()
