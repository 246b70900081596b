"""The horizontal flip keeps left/right classes learnable: mirrored images get swapped labels."""

from __future__ import annotations

import torch

from samadapt.data.augment import build_augmentation, mirror_label_map

JSRT_CLASSES = ["right_lung", "left_lung", "heart", "right_clavicle", "left_clavicle"]


def test_left_right_pairs_are_found_by_name():
    assert mirror_label_map(JSRT_CLASSES).tolist() == [0, 2, 1, 3, 5, 4]
    assert mirror_label_map(["Left-Hippocampus", "Right-Hippocampus"]).tolist() == [0, 2, 1]
    # no partner, or "left" only inside another word: nothing to swap
    assert mirror_label_map(["leakage"]) is None
    assert mirror_label_map(["left_lobe", "core", "leftover"]) is None


def test_flipped_samples_swap_paired_labels_and_keep_the_others():
    # right lung (1) on the image's left half, left lung (2) on its right half, heart (3) off-centre
    mask = torch.zeros(16, 16, dtype=torch.long)
    mask[:, :8], mask[:, 8:] = 1, 2
    mask[4:8, 9:12] = 3
    image = torch.rand(3, 16, 16)
    augment = build_augmentation(0, class_names=JSRT_CLASSES, rotate_degrees=0.0, scale=0.0, intensity=0.0,
                                 noise_std=0.0)
    flipped = kept = 0
    for index in range(40):
        out = augment({"image": image, "mask": mask}, index)
        if torch.equal(out["image"], image):
            kept += 1
            assert torch.equal(out["mask"], mask)
        else:
            flipped += 1
            assert torch.allclose(out["image"], image.flip(-1))
            # the structure on the image's left half is still called the right lung, as in a real chest
            assert (out["mask"][:, :8][out["mask"][:, :8] != 3] == 1).all()
            assert (out["mask"][:, 8:][out["mask"][:, 8:] != 3] == 2).all()
            assert torch.equal(out["mask"] == 3, (mask == 3).flip(-1))
    assert flipped and kept
