"""Registry, wrapper shapes, gradients through prompt tokens, the `models` command."""

from __future__ import annotations

import pytest
import torch

from samadapt.errors import UserError
from samadapt.modeling.registry import REGISTRY, TEST_IMAGE_SIZE, TEST_MODEL, build_model, get_spec, list_models


@pytest.fixture(scope="module")
def tiny():
    return build_model(TEST_MODEL, TEST_IMAGE_SIZE)


def test_registry_names_and_specs():
    expected = {f"sam{g}-hiera-{s}" for g in ("2", "2.1") for s in ("tiny", "small", "base-plus", "large")}
    expected |= {"sam-vit-base", "sam-vit-large", "sam-vit-huge"}
    assert set(list_models()) == expected
    assert get_spec("sam2.1_hiera_tiny").name == "sam2.1-hiera-tiny"  # Meta's short name
    assert get_spec("vit_b").name == "sam-vit-base"
    bplus = get_spec("sam2-hiera-base-plus").encoder
    assert bplus.widths == [112, 224, 448, 896] and bplus.bkg_pos_embed_size == (14, 14)
    assert get_spec("sam2-hiera-large").encoder.window_spec == (8, 4, 16, 8)
    assert all(s.default_image_size == 1024 for s in REGISTRY.values())


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UserError, match="sam2.1-hiera-tiny"):
        get_spec("sam2.1-hiera-tin")


@pytest.mark.parametrize("size", [0, 100, 250, "256"])
def test_bad_image_size(size):
    with pytest.raises(UserError, match="image size"):
        get_spec(TEST_MODEL).hf_config(size)


@pytest.mark.parametrize("name, size", [("sam2-hiera-tiny", 256), ("sam2-hiera-tiny", 512), ("sam-vit-base", 256)])
def test_feature_shapes_follow_image_size(name, size):
    model = build_model(name, size)
    with torch.no_grad():
        features = model.encode(torch.randn(1, 3, size, size))
        out = model.decode(features, points=torch.tensor([[[[10.0, 20.0]], [[30.0, 40.0]]]]), multimask=True)
    assert features.embedding.shape == (1, 256, size // 16, size // 16)
    if model.family == "sam2":
        assert [t.shape for t in features.high_res] == [(1, 32, size // 4, size // 4), (1, 64, size // 8, size // 8)]
        assert out.object_score.shape == (1, 2, 1)
    else:
        assert features.high_res is None and out.object_score is None
    assert out.logits.shape == (1, 2, 3, size // 4, size // 4) and out.iou.shape == (1, 2, 3)


def test_wrong_input_size_is_rejected(tiny):
    with pytest.raises(ValueError, match="256"):
        tiny.encode(torch.randn(1, 3, 512, 512))


def test_prompt_tokens_are_differentiable(tiny):
    with torch.no_grad():
        features = tiny.encode(torch.randn(1, 3, TEST_IMAGE_SIZE, TEST_IMAGE_SIZE))
    tokens = torch.randn(1, 4, 2, 256, requires_grad=True)  # 4 classes, 2 tokens each
    out = tiny.decode(features, prompt_tokens=tokens)
    assert out.logits.shape == (1, 4, 1, 64, 64)
    out.logits.square().mean().backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0


def test_parts_for_freezing(tiny):
    assert tiny.trunk is tiny.hf.vision_encoder.backbone
    assert tiny.image_encoder is tiny.hf.vision_encoder
    encoder_params = {id(p) for p in tiny.image_encoder.parameters()}
    assert not encoder_params & {id(p) for p in tiny.mask_decoder.parameters()}
    assert not encoder_params & {id(p) for p in tiny.prompt_encoder.parameters()}


def test_features_cache_round_trip(tiny):
    with torch.no_grad():
        features = tiny.encode(torch.randn(2, 3, TEST_IMAGE_SIZE, TEST_IMAGE_SIZE))
    again = type(features).from_dict(features.as_dict())
    assert torch.equal(again[1].embedding, features.embedding[1:2])


def test_models_command(capsys):
    from samadapt.cli import main

    assert main(["models", "--no-params"]) == 0
    out = capsys.readouterr().out
    assert "sam2.1-hiera-base-plus" in out and "sam_vit_b_01ec64.pth" in out
    assert main(["models", "--family", "nope"]) == 2
