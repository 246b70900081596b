"""Neck calibration after MAE: the decoder's stride-16 embedding gets zero channel means and unit
std, exactly as the affine map says, and the stride-4/8 features do not move."""

from __future__ import annotations

import torch

from samadapt.modeling.registry import build_model
from samadapt.pretrain.calibrate import calibrate_neck, embedding_statistics


def _offset_model():
    torch.manual_seed(0)
    model = build_model("sam2-hiera-tiny", 64).eval()
    with torch.no_grad():  # a trained trunk's large per-channel offsets, as after MAE
        model.hf.vision_encoder.neck.convs[1].bias.add_(torch.randn(256) * 3)
    return model


def test_calibration_standardises_the_embedding_and_leaves_high_res_alone():
    model = _offset_model()
    batches = [torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    with torch.no_grad():
        before = model.encode(batches[0])
    mean, std = embedding_statistics(model, batches)
    assert mean.norm() > 10 * std  # offsets dominate, the failure this fixes
    report = calibrate_neck(model, batches)
    with torch.no_grad():
        after = model.encode(batches[0])
    memory = model.hf.no_memory_embedding.view(1, -1, 1, 1)
    expected = (before.embedding - memory - mean.view(1, -1, 1, 1)) / std + memory
    torch.testing.assert_close(after.embedding, expected, rtol=1e-4, atol=1e-4)
    for new, old in zip(after.high_res, before.high_res):
        torch.testing.assert_close(new, old)
    assert report["offset_norm_after"] < 1e-3 and abs(report["std_after"] - 1) < 1e-3
    assert report["images"] == 8
