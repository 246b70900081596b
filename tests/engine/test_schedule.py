"""Learning-rate schedule values and the AdamW parameter-group split."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from samadapt.engine.schedule import CosineWarmup, adamw_param_groups, cosine_with_warmup
from samadapt.errors import UserError


class TinyViT(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
        self.encoder.blocks = nn.ModuleList([nn.Linear(8, 8) for _ in range(2)])
        self.encoder.norm = nn.LayerNorm(8)
        self.decoder = nn.Linear(8, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def _by_param(groups):
    return {id(p): g for g in groups for p in g["params"]}


def test_warmup_then_cosine_values():
    factor = CosineWarmup(total_steps=10, warmup_steps=4, min_lr_ratio=0.1)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == pytest.approx(1.0)
    assert factor(7) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factor(10) == pytest.approx(0.1) and factor(50) == pytest.approx(0.1)
    values = [factor(s) for s in range(4, 11)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_scheduler_is_per_step_and_keeps_group_rates():
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.1}])
    scheduler = cosine_with_warmup(optimizer, total_steps=4, warmup_steps=2)
    seen = []
    for _ in range(4):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx([0.5, 0.05]) and seen[1] == pytest.approx([1.0, 0.1])
    assert seen[3] == pytest.approx([0.5, 0.05])  # half-way through the 2 cosine steps
    assert scheduler.state_dict()["lr_lambdas"][0] == {"total_steps": 4, "warmup_steps": 2, "min_lr_ratio": 0.0}


def test_no_decay_for_norms_biases_and_position_embeddings():
    model = TinyViT()
    groups = _by_param(adamw_param_groups(model, lr=1e-3, weight_decay=0.05))
    assert groups[id(model.encoder.pos_embed)]["weight_decay"] == 0.0
    assert groups[id(model.encoder.norm.weight)]["weight_decay"] == 0.0
    assert groups[id(model.decoder.bias)]["weight_decay"] == 0.0
    assert groups[id(model.decoder.weight)]["weight_decay"] == 0.05
    assert id(model.frozen.weight) not in groups


def test_separate_lr_per_named_part_and_layer_decay():
    model = TinyViT()

    def layer_id(name: str) -> int:  # pos_embed = 0, block i = i + 1, everything after = 3
        if name.startswith("encoder.pos_embed"):
            return 0
        if name.startswith("encoder.blocks."):
            return int(name.split(".")[2]) + 1
        return 3

    groups = adamw_param_groups(model, lr=1e-3, weight_decay=0.05, group_lrs={"encoder.": 1e-4},
                                layer_id=layer_id, layer_decay=0.5)
    by_param = _by_param(groups)
    assert by_param[id(model.encoder.pos_embed)]["lr"] == pytest.approx(1e-4 * 0.5**3)
    assert by_param[id(model.encoder.blocks[0].weight)]["lr"] == pytest.approx(1e-4 * 0.5**2)
    assert by_param[id(model.encoder.blocks[1].weight)]["lr"] == pytest.approx(1e-4 * 0.5)
    assert by_param[id(model.decoder.weight)]["lr"] == pytest.approx(1e-3)
    assert by_param[id(model.decoder.weight)]["name"] == "default/decay/layer3"
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(map(id, trainable))
    torch.optim.AdamW(groups)  # the extra keys (name, lr_scale) are accepted


def test_bad_schedule_settings_are_user_errors():
    with pytest.raises(UserError, match="warm-up"):
        CosineWarmup(total_steps=5, warmup_steps=6)
    with pytest.raises(UserError, match="layer_id"):
        adamw_param_groups(TinyViT(), lr=1e-3, weight_decay=0.0, layer_decay=0.7)
