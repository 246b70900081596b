"""Exactness against Meta's reference code: random official-architecture weights saved as Meta's
checkpoint files, loaded through samadapt's converter, compared output by output."""

from __future__ import annotations

import pytest
import torch

from samadapt.modeling.loading import load_model

from .meta_reference import (
    build_meta_sam2,
    build_meta_sam_vit_b,
    meta_sam2_decode,
    meta_sam2_features,
    meta_sam_decode,
    relative_error,
)

TOLERANCE = 1e-4
pytestmark = pytest.mark.reference


@pytest.mark.parametrize(
    "config, name, size",
    [
        ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1-hiera-tiny", 256),
        ("configs/sam2/sam2_hiera_b+.yaml", "sam2-hiera-base-plus", 256),
        ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1-hiera-tiny", 384),
    ],
)
def test_sam2_matches_meta(tmp_path, config, name, size):
    meta = build_meta_sam2(config, size, seed=1)
    checkpoint = tmp_path / "meta.pt"
    torch.save({"model": meta.state_dict()}, checkpoint)
    model = load_model(weights=checkpoint, image_size=size)
    assert model.name == name and model.image_size == size

    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    point = torch.tensor([[[0.3 * size, 0.6 * size]]])
    box = torch.tensor([[0.1 * size, 0.2 * size, 0.7 * size, 0.8 * size]])
    with torch.no_grad():
        expected = meta_sam2_features(meta, pixels)
        features = model.encode(pixels)
        for ours, theirs in zip([*features.high_res, features.embedding], expected):
            assert ours.shape == theirs.shape
            assert relative_error(ours, theirs) < TOLERANCE

        for multimask in (False, True):
            masks, iou, obj = meta_sam2_decode(meta, expected, point, torch.ones(1, 1, dtype=torch.int), multimask)
            out = model.decode(features, points=point[:, None], point_labels=torch.ones(1, 1, 1), multimask=multimask)
            assert relative_error(out.logits[:, 0], masks) < TOLERANCE
            assert relative_error(out.iou[:, 0], iou) < TOLERANCE
            assert relative_error(out.object_score[:, 0], obj) < TOLERANCE

        masks, iou, _ = meta_sam2_decode(meta, expected, box.view(1, 2, 2), torch.tensor([[2, 3]]), True)
        out = model.decode(features, boxes=box[:, None], multimask=True)
        assert relative_error(out.logits[:, 0], masks) < TOLERANCE
        assert relative_error(out.iou[:, 0], iou) < TOLERANCE

        # no prompt at all: Meta pads with one "not a point" (label -1)
        masks, _, _ = meta_sam2_decode(meta, expected, torch.zeros(1, 1, 2), -torch.ones(1, 1, dtype=torch.int), True)
        assert relative_error(model.decode(features, multimask=True).logits[:, 0], masks) < TOLERANCE


def test_sam_vit_b_matches_meta(tmp_path):
    size = 256
    meta = build_meta_sam_vit_b(size, seed=3)
    checkpoint = tmp_path / "sam_vit_b.pth"
    torch.save(meta.state_dict(), checkpoint)  # Meta's SAM files are plain state dicts
    model = load_model(weights=checkpoint)
    assert (model.name, model.image_size) == ("sam-vit-base", size)

    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(4))
    point = torch.tensor([[[60.0, 100.0]]])
    box = torch.tensor([[20.0, 30.0, 200.0, 180.0]])
    with torch.no_grad():
        expected = meta.image_encoder(pixels)
        features = model.encode(pixels)
        assert features.high_res is None
        assert relative_error(features.embedding, expected) < TOLERANCE

        masks, iou = meta_sam_decode(meta, expected, points=(point, torch.ones(1, 1, dtype=torch.int)), multimask=True)
        out = model.decode(features, points=point[:, None], point_labels=torch.ones(1, 1, 1), multimask=True)
        assert relative_error(out.logits[:, 0], masks) < TOLERANCE
        assert relative_error(out.iou[:, 0], iou) < TOLERANCE
        assert out.object_score is None

        masks, iou = meta_sam_decode(meta, expected, boxes=box)
        out = model.decode(features, boxes=box[:, None])
        assert relative_error(out.logits[:, 0], masks) < TOLERANCE

        masks, _ = meta_sam_decode(meta, expected)
        assert relative_error(model.decode(features).logits[:, 0], masks) < TOLERANCE


def test_sam_checkpoint_loads_at_another_size(tmp_path):
    """A SAM checkpoint made at 256 px runs at 512: its position tables are interpolated."""
    meta = build_meta_sam_vit_b(256, seed=5)
    checkpoint = tmp_path / "sam_vit_b.pth"
    torch.save(meta.state_dict(), checkpoint)
    model = load_model("sam-vit-base", checkpoint, image_size=512)
    sd = model.hf.state_dict()
    assert sd["vision_encoder.pos_embed"].shape == (1, 32, 32, 768)
    assert sd["vision_encoder.layers.2.attn.rel_pos_h"].shape == (63, 64)  # global block: 2·32 − 1
    assert sd["vision_encoder.layers.0.attn.rel_pos_h"].shape == (27, 64)  # windowed: unchanged
    # global tables are resized as Meta's get_rel_pos resizes them on the fly (linear)
    table = meta.image_encoder.blocks[2].attn.rel_pos_h.detach()
    expected = torch.nn.functional.interpolate(table.reshape(1, 31, -1).permute(0, 2, 1), size=63, mode="linear")
    expected = expected.reshape(-1, 63).permute(1, 0)
    assert relative_error(sd["vision_encoder.layers.2.attn.rel_pos_h"], expected) < 1e-6
    with torch.no_grad():
        out = model(torch.randn(1, 3, 512, 512), points=torch.tensor([[[[100.0, 200.0]]]]))
    assert out.logits.shape == (1, 1, 1, 128, 128) and torch.isfinite(out.logits).all()
