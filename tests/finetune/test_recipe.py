"""The fine-tuning recipe: which init gets which recipe, overrides, and the optimiser groups it makes."""

from __future__ import annotations

import pytest

from samadapt.errors import UserError
from samadapt.finetune.recipe import PRETRAINED, SCRATCH, resolve_recipe


@pytest.mark.parametrize("init_kind, expected", [
    ("random", SCRATCH), ("mae", PRETRAINED), ("sam2", PRETRAINED), ("ckpt", PRETRAINED),
])
def test_auto_picks_by_init(init_kind, expected):
    recipe = resolve_recipe("auto", init_kind, lr=1e-3)
    assert recipe.name == expected.name
    assert recipe.encoder_lr == pytest.approx(1e-3 * expected.encoder_lr_scale)
    assert recipe.layer_decay == expected.layer_decay
    assert recipe.warmup_fraction == expected.warmup_fraction


@pytest.mark.parametrize("kwargs, field, value", [
    ({"encoder_lr": 3e-5}, "encoder_lr", 3e-5),
    ({"layer_decay": 0.9}, "layer_decay", 0.9),
    ({"layer_decay": 1.0}, "layer_decay", None),  # 1 means no decay
    ({"warmup_fraction": 0.0}, "warmup_fraction", 0.0),
])
def test_explicit_values_override_the_recipe(kwargs, field, value):
    recipe = resolve_recipe("pretrained", "random", lr=1e-3, **kwargs)
    assert getattr(recipe, field) == value
    assert recipe.name == "pretrained+custom"


@pytest.mark.parametrize("kwargs, message", [
    ({"recipe": "mae"}, "--recipe 'mae'"),
    ({"warmup_fraction": 1.0}, "--warmup-fraction 1.0"),
])
def test_bad_values_are_user_errors(kwargs, message):
    args = {"recipe": "auto", "init_kind": "mae", "lr": 1e-3, **kwargs}
    with pytest.raises(UserError, match=message):
        resolve_recipe(**args)


def test_pretrained_recipe_groups_decay_from_the_top_block_down():
    """Tiny SAM2: the decoder and prompts at lr, the encoder below, deeper trunk blocks higher."""
    from samadapt.modeling.class_prompts import ENCODER_PREFIX, ClassPromptSegmenter
    from samadapt.modeling.registry import build_model

    model = ClassPromptSegmenter(build_model("sam2-hiera-tiny", 64), ["a"], tokens_per_class=1)
    model.configure_trainable("all")
    recipe = resolve_recipe("auto", "mae", lr=1e-3)
    groups = model.param_groups(recipe.lr, recipe.encoder_lr, 0.01, recipe.layer_decay)
    lr_of = {name: group["lr"] for group in groups for name, p in model.named_parameters()
             if any(p is q for q in group["params"])}
    n_blocks = len(model.base.trunk.blocks)
    block_lr = [lr_of[f"{ENCODER_PREFIX}backbone.blocks.{i}.attn.qkv.weight"] for i in range(n_blocks)]
    assert block_lr == sorted(block_lr) and block_lr[0] < block_lr[-1]
    top = n_blocks + 2  # decoder level (ClassPromptSegmenter.layer_id)
    for i, lr in enumerate(block_lr):
        assert lr == pytest.approx(recipe.encoder_lr * recipe.layer_decay ** (top - (i + 1)))
    assert lr_of["class_prompts"] == pytest.approx(1e-3)
    decoder = [lr for name, lr in lr_of.items() if not name.startswith(ENCODER_PREFIX)]
    assert max(block_lr) < min(decoder)
    scratch = resolve_recipe("auto", "random", lr=1e-3)
    plain = model.param_groups(scratch.lr, scratch.encoder_lr, 0.01, scratch.layer_decay)
    assert {group["lr"] for group in plain} == {1e-3}
