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
