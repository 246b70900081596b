"""Optimiser parameter groups and the learning-rate schedule shared by every training command.

`adamw_param_groups` splits a model's trainable parameters into AdamW groups:

* no weight decay on biases, normalisation weights (any parameter with ndim <= 1) and on
  embeddings that encode position or act as learned tokens (`pos_embed`, `cls_token`, ...):
  decaying them towards zero only hurts;
* a separate base learning rate per named part of the model (e.g. a pre-trained encoder at 1e-5
  and a fresh decoder at 1e-4), chosen by name prefix;
* optional layer-wise learning-rate decay: given `layer_id(name) -> int`, a parameter in layer
  `i` of `n` gets `lr * decay ** (n - i)`, so early (generic) layers move least.

`adamw` builds every training command's AdamW, on the fused kernel where the device and dtypes
allow it: on a CPU its step is several times cheaper than the per-tensor loop (docs/mae.md,
"Speed"), which counts where the forward and backward passes are small (decoder-only few-shot
training, the sparse MAE encoder).

`cosine_with_warmup` returns a `LambdaLR` stepped once per optimiser step: linear warm-up from
`lr / warmup_steps` to `lr`, then cosine decay to `min_lr_ratio * lr`. Because it is a factor on
each group's own base learning rate, the per-group rates above are kept.

Example::

    groups = adamw_param_groups(model, lr=1e-4, weight_decay=0.05,
                                group_lrs={"image_encoder.": 1e-5})
    optimizer = adamw(groups)
    scheduler = cosine_with_warmup(optimizer, total_steps=10_000, warmup_steps=500)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from samadapt.errors import UserError

# Substrings of parameter names that must never be weight-decayed even though they are matrices.
NO_DECAY_NAME_PARTS = (
    "pos_embed",
    "position_embedding",
    "pos_embedding",
    "absolute_pos",
    "rel_pos",
    "cls_token",
    "mask_token",
    "no_mem_embed",
    "not_a_point_embed",
)


def excluded_from_weight_decay(name: str, param: torch.Tensor, extra_parts: Iterable[str] = ()) -> bool:
    """True for biases, norm weights (ndim <= 1) and position/token embeddings."""
    if param.ndim <= 1 or name.endswith(".bias"):
        return True
    return any(part in name for part in (*NO_DECAY_NAME_PARTS, *extra_parts))


def adamw_param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    group_lrs: Mapping[str, float] | None = None,
    layer_id: Callable[[str], int] | None = None,
    layer_decay: float | None = None,
    no_decay_name_parts: Iterable[str] = (),
) -> list[dict]:
    """Parameter groups for `torch.optim.AdamW`; frozen parameters (requires_grad False) are left out.

    `group_lrs` maps a name prefix to that part's base lr (the longest matching prefix wins;
    parameters matching no prefix use `lr`). Each returned group carries `name` (part/decay/layer)
    and `lr_scale` (the layer-decay factor) so logs can tell groups apart.
    """
    group_lrs = dict(group_lrs or {})
    for prefix, value in group_lrs.items():
        if not (isinstance(value, (int, float)) and value >= 0):
            raise UserError(f"learning rate for '{prefix}' must be a number >= 0, got {value!r}")
    if layer_decay is not None:
        if layer_id is None:
            raise UserError("layer_decay needs a layer_id function mapping parameter names to layers")
        if not 0 < layer_decay <= 1:
            raise UserError(f"layer_decay must be in (0, 1], got {layer_decay}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise UserError("the model has no trainable parameters")
    num_layers = max(layer_id(n) for n, _ in named) if layer_decay is not None else 0

    groups: dict[tuple, dict] = {}
    for name, param in named:
        matches = [prefix for prefix in group_lrs if name.startswith(prefix)]
        part = max(matches, key=len) if matches else ""
        base_lr = group_lrs[part] if part else lr
        decay = 0.0 if excluded_from_weight_decay(name, param, no_decay_name_parts) else weight_decay
        layer = layer_id(name) if layer_decay is not None else 0
        scale = layer_decay ** (num_layers - layer) if layer_decay is not None else 1.0
        key = (part, decay, layer)
        if key not in groups:
            label = f"{part.rstrip('.') or 'default'}/{'decay' if decay else 'no_decay'}"
            if layer_decay is not None:
                label += f"/layer{layer}"
            groups[key] = {
                "name": label,
                "params": [],
                "lr": base_lr * scale,
                "weight_decay": decay,
                "lr_scale": scale,
            }
        groups[key]["params"].append(param)
    return list(groups.values())


class CosineWarmup:
    """Multiplicative lr factor for step `s` (0-based): linear warm-up, then cosine to `min_lr_ratio`.

    A callable object rather than a lambda so `LambdaLR.state_dict()` records its settings.
    """

    def __init__(self, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0):
        if total_steps < 1:
            raise UserError(f"total training steps must be >= 1, got {total_steps}")
        if not 0 <= warmup_steps <= total_steps:
            raise UserError(f"warm-up steps must be in [0, {total_steps}], got {warmup_steps}")
        if not 0 <= min_lr_ratio <= 1:
            raise UserError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.min_lr_ratio = float(min_lr_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            # Starts at lr / warmup_steps (not 0, which would waste the first step) and reaches lr
            # at the last warm-up step.
            return (step + 1) / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine


def adamw(params, **options) -> torch.optim.AdamW:
    """`torch.optim.AdamW(params, **options)` on the fused kernel, or the per-tensor loop where the
    fused one does not take the device or dtype."""
    try:
        return torch.optim.AdamW(params, fused=True, **options)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, **options)


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler: call `scheduler.step()` after every optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, CosineWarmup(total_steps, warmup_steps, min_lr_ratio))
