"""ClassPromptSegmenter: shapes, what trains in each mode, optimiser groups, prompts from masks."""

from __future__ import annotations

import pytest
import torch

from samadapt.errors import UserError


@pytest.fixture(scope="module")
def base():
    from samadapt.modeling.registry import build_model

    return build_model("sam2-hiera-tiny", 64)


def _segmenter(base, classes):
    from samadapt.modeling.class_prompts import ClassPromptSegmenter

    return ClassPromptSegmenter(base, classes, tokens_per_class=2)


@pytest.mark.parametrize("classes", [["lesion"], ["a", "b", "c"]])
def test_one_mask_per_class(base, classes):
    model = _segmenter(base, classes).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, len(classes), 16, 16)
    assert model.class_prompts.shape == (len(classes), 2, 256)


def test_class_prompts_decide_the_masks(base):
    model = _segmenter(base, ["a", "b"]).eval()
    with torch.no_grad():
        model.class_prompts[1] = model.class_prompts[0]
        logits = model(torch.randn(1, 3, 64, 64))
    torch.testing.assert_close(logits[:, 0], logits[:, 1])


def test_decoder_mode_trains_prompts_and_mask_decoder_only(base):
    model = _segmenter(base, ["a"])
    model.configure_trainable("decoder")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "class_prompts" in trainable
    assert all(n == "class_prompts" or n.startswith("base.hf.mask_decoder.") for n in trainable)
    assert any(n.startswith("base.hf.mask_decoder.conv_s0") for n in trainable)


def test_encoder_decoder_freezes_first_stages(base):
    model = _segmenter(base, ["a"])
    model.configure_trainable("encoder-decoder", freeze_stages=2)
    params = dict(model.named_parameters())
    blocks = "base.hf.vision_encoder.backbone.blocks."
    # Hiera-T: stages of 1, 2, 7, 2 blocks: blocks 0-2 are the first two stages
    assert not params[f"{blocks}2.mlp.proj_in.weight"].requires_grad
    assert params[f"{blocks}3.mlp.proj_in.weight"].requires_grad
    assert not params["base.hf.vision_encoder.backbone.patch_embed.projection.weight"].requires_grad
    assert not any(p.requires_grad for n, p in params.items() if n.startswith("base.hf.prompt_encoder."))
    assert params["class_prompts"].requires_grad


def test_freeze_stages_refused_outside_encoder_decoder(base):
    model = _segmenter(base, ["a"])
    with pytest.raises(UserError, match="freeze-stages"):
        model.configure_trainable("all", freeze_stages=1)
    with pytest.raises(UserError, match="4 trunk stages"):
        model.configure_trainable("encoder-decoder", freeze_stages=5)


def test_encoder_has_its_own_learning_rate_and_layer_decay(base):
    model = _segmenter(base, ["a"])
    model.configure_trainable("all")
    groups = model.param_groups(lr=1e-3, encoder_lr=1e-5, weight_decay=0.01)
    names = {g["name"]: g["lr"] for g in groups}
    assert names["base.hf.vision_encoder/decay"] == 1e-5
    assert names["default/decay"] == 1e-3
    decayed = model.param_groups(lr=1e-3, encoder_lr=1e-4, weight_decay=0.01, layer_decay=0.5)
    lrs = [g["lr"] for g in decayed if g["name"].startswith("base.hf.vision_encoder")]
    assert min(lrs) < 1e-4 * 0.5 ** 10  # the patch embedding, 14 layers below the top
    prompts = next(g for g in decayed if any(p is model.class_prompts for p in g["params"]))
    assert prompts["weight_decay"] == 0.0 and prompts["lr"] == 1e-3


def test_index_mask_from_logits():
    from samadapt.modeling.class_prompts import logits_to_index, one_hot_targets

    logits = torch.tensor([[[[-1.0, 2.0, 1.0]], [[-2.0, 1.0, 3.0]]]])  # (1, 2, 1, 3)
    assert logits_to_index(logits).tolist() == [[[0, 1, 2]]]
    target = one_hot_targets(torch.tensor([[[0, 1, 2]]]), 2)
    assert target.shape == (1, 2, 1, 3)
    assert target[0, :, 0].T.tolist() == [[0, 0], [1, 0], [0, 1]]


def test_simulated_prompts():
    from samadapt.finetune.prompts import simulate_prompts

    mask = torch.zeros(1, 32, 32, dtype=torch.long)
    mask[0, 2:6, 3:9] = 1
    mask[0, 20:30, 20:30] = 1
    boxes = simulate_prompts(mask, 2, "box")["boxes"]
    assert boxes.tolist() == [[[3.0, 2.0, 30.0, 30.0], [0.0, 0.0, 32.0, 32.0]]]  # class 2 absent: whole image
    points = simulate_prompts(mask, 2, "points")
    assert points["points"].shape == (1, 2, 2, 2)
    assert points["point_labels"].tolist() == [[[1, 1], [-1, -1]]]
    x, y = points["points"][0, 0, 0].tolist()  # largest component first, inside it
    assert 20 <= x < 30 and 20 <= y < 30


def test_prompted_forward(base):
    from samadapt.finetune.prompts import simulate_prompts

    model = _segmenter(base, ["a", "b"]).eval()
    mask = torch.zeros(2, 64, 64, dtype=torch.long)
    mask[:, 10:20, 10:30] = 1
    for mode in ("box", "points"):
        with torch.no_grad():
            logits = model(torch.randn(2, 3, 64, 64), **simulate_prompts(mask, 2, mode))
        assert logits.shape == (2, 2, 16, 16)


def test_gate_pushes_only_absent_classes_below_zero():
    from samadapt.modeling.class_prompts import gate_absent, presence_targets

    logits = torch.tensor([[[[3.0, -1.0]], [[2.0, 0.5]]]])  # (1, 2, 1, 2)
    gated = gate_absent(logits, torch.tensor([[1.5, -0.2]]))
    torch.testing.assert_close(gated[:, 0], logits[:, 0])  # present: untouched
    assert (gated[:, 1] <= -10).all()  # absent: no pixel can pass any threshold above -10
    target = torch.zeros(2, 2, 4, 4)
    target[0, 1, 0, 0] = 1
    target[1, 0, 3, 3] = 1
    valid = torch.ones(2, 4, 4, dtype=torch.bool)
    valid[1, 3, 3] = False  # a class seen only on padding is absent
    assert presence_targets(target, valid).tolist() == [[0.0, 1.0], [0.0, 0.0]]


def test_presence_gate_empties_absent_classes_in_eval_only(base):
    from samadapt.modeling.class_prompts import ClassPromptSegmenter

    model = ClassPromptSegmenter(base, ["a", "b"], tokens_per_class=2, presence=True)
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        raw, presence = model(pixels, return_presence=True)
        assert presence.shape == (1, 2)
        model.base.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(-50.0)  # "nothing here"
        model.train()
        torch.testing.assert_close(model(pixels), model(pixels, return_presence=True)[0])  # training sees raw logits
        model.eval()
        assert (model(pixels) <= -10).all()
        model.base.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(50.0)  # "present"
        torch.testing.assert_close(model(pixels), model(pixels, return_presence=True)[0])


def test_presence_gate_needs_sam2():
    from samadapt.modeling.class_prompts import ClassPromptSegmenter
    from samadapt.modeling.registry import build_model

    with pytest.raises(UserError, match="object-score"):
        ClassPromptSegmenter(build_model("sam-vit-base", 64), ["a"], presence=True)
