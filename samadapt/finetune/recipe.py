"""How the optimiser treats the image encoder: the fine-tuning recipe (`--recipe`).

A randomly initialised encoder has nothing to keep, and trains best at one high learning rate
everywhere. A pre-trained encoder (MAE, SAM2 weights, an earlier run) holds features that one such
rate erases within a few hundred steps; MAE, BEiT and Hiera therefore fine-tune pre-trained
encoders with layer-wise learning-rate decay (early blocks move least), a base rate for the encoder
below the decoder's, and a warm-up. The two recipes:

    scratch      encoder and decoder at --lr, no layer decay, 5 % warm-up
    pretrained   encoder at --lr x ENCODER_LR_SCALE, layer-wise decay LAYER_DECAY over the trunk
                 blocks, 10 % warm-up; decoder and class prompts at --lr
    auto         pretrained for --init sam2:/mae:/ckpt:, scratch for --init random (the default)

With `--train lora` the encoder trains only through LoRA adapters whose B starts at zero: the start
is the pre-trained model whatever the rate, and the low-rank update already limits how far the
features move, which is what the lower encoder rate and layer decay do for full fine-tuning. So the
adapters train at --lr in every block (no layer decay); the warm-up stays the recipe's.

An explicit `--encoder-lr`, `--layer-decay` or `--warmup-fraction` overrides its part of the recipe.
The values of `pretrained` were chosen on validation frames of the demo's phantoms (docs/finetune.md
has the comparison); the recipe a run used is written into its config and summary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from samadapt.errors import UserError
from samadapt.options import flag

RECIPES = ("auto", "scratch", "pretrained")
PRETRAINED_INITS = ("sam2", "hf", "mae", "ckpt")


@dataclass(frozen=True)
class Recipe:
    name: str
    encoder_lr_scale: float  # encoder base lr = lr * this
    layer_decay: float | None  # None: every encoder layer at the encoder's base lr
    warmup_fraction: float  # of all optimiser steps


SCRATCH = Recipe("scratch", encoder_lr_scale=1.0, layer_decay=None, warmup_fraction=0.05)
PRETRAINED = Recipe("pretrained", encoder_lr_scale=0.5, layer_decay=0.75, warmup_fraction=0.1)


@dataclass(frozen=True)
class ResolvedRecipe:
    """What the optimiser gets: the recipe's values with the user's explicit overrides applied."""

    name: str
    lr: float
    encoder_lr: float
    layer_decay: float | None
    warmup_fraction: float

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_recipe(recipe: str, init_kind: str, lr: float, encoder_lr: float | None = None,
                   layer_decay: float | None = None, warmup_fraction: float | None = None,
                   adapters: bool = False) -> ResolvedRecipe:
    """The recipe `recipe` ('auto' picks by `init_kind`, the part of --init before ':'), with the
    explicitly given values taking precedence; `adapters`: the encoder trains LoRA adapters only."""
    if recipe not in RECIPES:
        raise UserError(f"{flag('recipe')} {recipe!r}: choose {', '.join(RECIPES)}")
    if recipe == "auto":
        recipe = "pretrained" if init_kind in PRETRAINED_INITS else "scratch"
    base = PRETRAINED if recipe == "pretrained" else SCRATCH
    if adapters:
        base = replace(base, name=f"{base.name}-lora", encoder_lr_scale=1.0, layer_decay=None)
    if warmup_fraction is not None and not 0 <= warmup_fraction < 1:
        raise UserError(f"{flag('warmup_fraction')} {warmup_fraction}: must be in [0, 1)")
    # layer decay 1.0 is "no decay": store it as None so the optimiser groups stay the plain ones
    decay = base.layer_decay if layer_decay is None else (None if layer_decay == 1.0 else layer_decay)
    return ResolvedRecipe(
        name=base.name if encoder_lr is None and layer_decay is None and warmup_fraction is None else f"{base.name}+custom",
        lr=lr,
        encoder_lr=lr * base.encoder_lr_scale if encoder_lr is None else encoder_lr,
        layer_decay=decay,
        warmup_fraction=base.warmup_fraction if warmup_fraction is None else warmup_fraction,
    )
