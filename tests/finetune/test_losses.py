"""Losses against hand-computed values on tiny tensors, gradients on empty masks, the spec parser."""

from __future__ import annotations

import math

import pytest
import torch

from samadapt.errors import UserError
from samadapt.finetune.losses import (
    LOSS_PRESETS,
    FocalTverskyLoss,
    SigmoidFocalLoss,
    SoftDiceLoss,
    SoftTverskyLoss,
    WeightedBCELoss,
    parse_loss,
)

LOG2 = math.log(2.0)


def _half_foreground():
    """logits 0 (p = 0.5 everywhere) on 1x1x2x2 with target [[1, 1], [0, 0]]."""
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    return logits, target


def test_soft_dice_hand_value():
    logits, target = _half_foreground()
    # intersection 1, |p| 2, |t| 2, smooth 1: 1 - (2 + 1) / (4 + 1)
    assert SoftDiceLoss(smooth=1.0)(logits, target).item() == pytest.approx(0.4)


def test_soft_dice_ignores_padding():
    logits, target = _half_foreground()
    valid = torch.tensor([[[1, 1], [0, 0]]])
    # the bottom row is padding: intersection 1, |p| 1, |t| 2 -> 1 - 3 / 4
    assert SoftDiceLoss(smooth=1.0)(logits, target, valid).item() == pytest.approx(0.25)


def test_soft_dice_averages_classes():
    logits = torch.zeros(1, 2, 2, 2)
    target = torch.zeros(1, 2, 2, 2)
    target[0, 0, 0] = 1  # class 0 as above (loss 0.4); class 1 empty: 1 - 1 / (2 + 1)
    expected = (0.4 + (1 - 1 / 3)) / 2
    assert SoftDiceLoss(smooth=1.0)(logits, target).item() == pytest.approx(expected)


def test_bce_with_positive_weight():
    logits, target = _half_foreground()
    assert WeightedBCELoss()(logits, target).item() == pytest.approx(LOG2)
    # two positives weighted 3, two negatives weighted 1: (3 + 3 + 1 + 1) log 2 / 4
    assert WeightedBCELoss(pos_weight=3.0)(logits, target).item() == pytest.approx(2 * LOG2)
    valid = torch.tensor([[[1, 1], [0, 0]]])
    assert WeightedBCELoss(pos_weight=3.0)(logits, target, valid).item() == pytest.approx(3 * LOG2)


def test_focal_hand_value():
    logits, target = _half_foreground()
    # p_t = 0.5 everywhere: (1 - 0.5)^2 * log 2
    assert SigmoidFocalLoss(gamma=2.0)(logits, target).item() == pytest.approx(0.25 * LOG2)
    # alpha 0.25 on positives, 0.75 on negatives, two of each
    assert SigmoidFocalLoss(gamma=2.0, alpha=0.25)(logits, target).item() == pytest.approx(0.5 * 0.25 * LOG2)
    # gamma 0 is plain BCE
    assert SigmoidFocalLoss(gamma=0.0)(logits, target).item() == pytest.approx(LOG2)


def test_tversky_and_focal_tversky_hand_values():
    logits, target = _half_foreground()
    # TP 1, FP 1, FN 1, smooth 1: 1 - (1 + 1) / (1 + 0.3 + 0.7 + 1)
    tversky = SoftTverskyLoss(alpha=0.3, beta=0.7, smooth=1.0)(logits, target).item()
    assert tversky == pytest.approx(1 / 3)
    # unequal weights: a prediction on the bottom row only (FP 2, FN 2 at p ~ 1)
    strong = torch.tensor([[[[-30.0, -30.0], [30.0, 30.0]]]])
    assert SoftTverskyLoss(alpha=0.2, beta=0.8, smooth=1.0)(strong, target).item() == pytest.approx(1 - 1 / (0.4 + 1.6 + 1))
    focal = FocalTverskyLoss(alpha=0.3, beta=0.7, gamma=0.75, smooth=1.0)(logits, target).item()
    assert focal == pytest.approx((1 / 3) ** 0.75)


def test_tversky_with_equal_weights_is_dice():
    logits = torch.randn(2, 3, 5, 5)
    target = (torch.rand(2, 3, 5, 5) > 0.6).float()
    dice = SoftDiceLoss(smooth=1.0)(logits, target)
    tversky = SoftTverskyLoss(alpha=0.5, beta=0.5, smooth=0.5)(logits, target)
    # Dice: (2I + s) / (|p| + |t| + s) == Tversky with alpha = beta = 1/2 and smooth s/2
    assert tversky.item() == pytest.approx(dice.item(), rel=1e-5)


@pytest.mark.parametrize("spec", ["dice", "bce", "focal", "tversky", "focal_tversky", "0.5*dice+0.5*bce"])
@pytest.mark.parametrize("case", ["empty_target", "empty_prediction", "both_empty", "perfect", "all_padding"])
def test_gradients_finite_on_empty_masks(spec, case):
    target = torch.zeros(2, 2, 4, 4)
    logits = torch.full((2, 2, 4, 4), 3.0)
    valid = None
    if case == "empty_prediction":
        target[:, :, 1:3, 1:3] = 1
        logits.fill_(-30.0)
    elif case == "both_empty":
        logits.fill_(-30.0)
    elif case == "perfect":
        target[:, :, 1:3, 1:3] = 1
        logits = target * 60 - 30
    elif case == "all_padding":
        valid = torch.zeros(2, 4, 4)
    logits = logits.clone().requires_grad_(True)
    loss = parse_loss(spec)(logits, target, valid)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()


def test_3d_inputs():
    logits = torch.randn(1, 2, 3, 4, 4, requires_grad=True)
    target = (torch.rand(1, 2, 3, 4, 4) > 0.5).float()
    valid = torch.ones(1, 3, 4, 4)
    parse_loss("dice+bce+focal+tversky+focal_tversky")(logits, target, valid).backward()
    assert torch.isfinite(logits.grad).all()


def test_parser_weights_and_values():
    logits, target = _half_foreground()
    combined = parse_loss("0.9*dice+0.1*bce")
    assert combined.weights == [0.9, 0.1] and combined.names == ["dice", "bce"]
    assert combined(logits, target).item() == pytest.approx(0.9 * 0.4 + 0.1 * LOG2)
    parts = combined.components(logits, target)
    assert parts["dice"].item() == pytest.approx(0.4)


@pytest.mark.parametrize(
    "spec,names,weights",
    [
        ("dice+bce", ["dice", "bce"], [1.0, 1.0]),
        ("focal", ["focal"], [1.0]),
        ("tversky", ["tversky"], [1.0]),
        ("0.5*focal_tversky+0.5*bce", ["focal_tversky", "bce"], [0.5, 0.5]),
        ("focal-tversky", ["focal_tversky"], [1.0]),
        (" 2 * dice + 1e-1*bce(pos_weight=3) ", ["dice", "bce"], [2.0, 0.1]),
        ("tversky(alpha=0.2, beta=0.8)+focal(gamma=1e+0)", ["tversky", "focal"], [1.0, 1.0]),
    ],
)
def test_parser_cases(spec, names, weights):
    loss = parse_loss(spec)
    assert loss.names == names and loss.weights == weights


def test_parser_passes_parameters():
    loss = parse_loss("bce(pos_weight=3)")
    assert loss.terms[0].pos_weight == 3.0
    logits, target = _half_foreground()
    assert parse_loss("tversky(alpha=0.3,beta=0.7)")(logits, target).item() == pytest.approx(1 / 3)


def test_presets_all_parse():
    assert set(LOSS_PRESETS) == {"dice", "bce", "dice+bce", "focal", "tversky", "focal-tversky"}
    for name, spec in LOSS_PRESETS.items():
        assert parse_loss(name).spec == spec


@pytest.mark.parametrize(
    "spec,fragment",
    [
        ("dice+hinge", "unknown loss term 'hinge'"),
        ("dice+hinge", "valid terms: dice, bce, focal, tversky, focal_tversky"),
        ("", "empty loss spec"),
        ("0.5*", "cannot parse loss term"),
        ("dice+dice", "appears twice"),
        ("focal(beta=1)", "unknown parameter 'beta=1'"),
        ("focal(gamma=abc)", "'abc' is not a number"),
        ("0*dice", "all weights are zero"),
        ("-1*dice", "cannot parse"),
    ],
)
def test_parser_errors(spec, fragment):
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        parse_loss(spec)
