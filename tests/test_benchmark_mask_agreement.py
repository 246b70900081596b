"""The mask-agreement benchmark's arithmetic: pooled and worst-frame IoU per class, changed pixels."""

from __future__ import annotations

import numpy as np
import pytest


def test_agreement_pools_intersections_and_keeps_the_worst_frame():
    from benchmarks.mask_agreement import agreement

    reference = {"a": np.array([[1, 1, 0, 0]]), "b": np.array([[2, 2, 2, 2]])}
    other = {"a": np.array([[1, 0, 0, 0]]), "b": np.array([[2, 2, 2, 2]])}
    result = agreement(reference, other, ["one", "two"])
    assert result["one"] == {"iou": 0.5, "worst_frame_iou": 0.5}
    assert result["two"] == {"iou": 1.0, "worst_frame_iou": 1.0}
    assert result["changed_pixels"] == pytest.approx(1 / 8)


def test_agreement_refuses_paths_that_predicted_other_frames():
    from benchmarks.mask_agreement import agreement

    with pytest.raises(RuntimeError, match="different frames"):
        agreement({"a": np.zeros((1, 1))}, {"b": np.zeros((1, 1))}, ["one"])


@pytest.mark.parametrize("labels, expected", [
    (np.array([[0, 1, 1], [0, 0, 1]]), {"one": (1.0, 0.0, 3.0, 2.0)}),
    (np.array([[2, 0], [0, 0]]), {"two": (0.0, 0.0, 1.0, 1.0)}),
    (np.zeros((2, 2), dtype=int), {}),
])
def test_class_boxes_are_the_exclusive_pixel_bounds_of_each_present_class(labels, expected):
    from benchmarks.mask_agreement import _class_boxes

    assert _class_boxes(labels, ["one", "two"]) == expected


def test_box_agreement_pools_over_frames_and_counts_boxes_per_class():
    from benchmarks.mask_agreement import box_agreement

    reference = {("a", "one"): np.array([True, True, False]), ("b", "one"): np.array([True, False, False])}
    other = {("a", "one"): np.array([True, False, False]), ("b", "one"): np.array([True, False, False])}
    result = box_agreement(reference, other, ["one", "two"])
    assert result["one"] == {"iou": 2 / 3, "worst_frame_iou": 0.5, "boxes": 2, "empty_reference_masks": 0}
    assert result["two"] == {"iou": 1.0, "worst_frame_iou": 1.0, "boxes": 0, "empty_reference_masks": 0}
    empty = box_agreement({("a", "one"): np.zeros(2, bool)}, {("a", "one"): np.zeros(2, bool)}, ["one"])
    assert empty["one"]["empty_reference_masks"] == 1 and empty["one"]["iou"] == 1.0
    assert result["changed_pixels"] == pytest.approx(1 / 6)


def test_box_masks_are_the_class_queries_forward_with_their_boxes():
    """The benchmark's decode is the model's own box-prompted forward (absent classes get the whole
    image as their box, as `finetune --prompt box` trains them)."""
    import torch

    from benchmarks.mask_agreement import box_masks
    from samadapt.data.preprocess import prepare_image, restore_logits
    from samadapt.modeling.class_prompts import ClassPromptSegmenter
    from samadapt.modeling.registry import build_model

    torch.manual_seed(0)
    segmenter = ClassPromptSegmenter(build_model("sam2-hiera-tiny", 64), ["a", "b"]).eval()
    image = np.random.default_rng(0).integers(0, 255, (48, 64), dtype=np.uint8)
    masks = box_masks(segmenter, segmenter.base.encode, image, {"b": (8.0, 4.0, 40.0, 30.0)})
    assert list(masks) == ["b"] and masks["b"].shape == (48, 64)

    pixels, letterbox = prepare_image(image, 64)
    corners = letterbox.to_model_xy(np.array([[8.0, 4.0], [40.0, 30.0]])).reshape(4)
    boxes = torch.tensor([[[0.0, 0.0, 64.0, 64.0], corners.tolist()]], dtype=torch.float32)
    with torch.inference_mode():
        logits = segmenter(pixels[None], boxes=boxes)
    np.testing.assert_array_equal(masks["b"], (restore_logits(logits[0, 1], letterbox) > 0).numpy())
