"""Hooks for per-step / per-epoch extras, and small helpers the training loop shares.

A command adds behaviour (MAE reconstruction pictures, plots, extra logs) by subclassing
`Callback` and overriding only the hooks it needs. Hooks run on every rank, so a hook may take
part in collective operations; one that writes files should check `trainer.is_main` first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from samadapt.errors import UserError

if TYPE_CHECKING:
    from samadapt.engine.trainer import Trainer


class Callback:
    def on_step_end(self, trainer: "Trainer", step: int, metrics: Mapping[str, float]) -> None:
        """After each optimiser step; `metrics` are averaged over ranks (plus `images_per_s`)."""

    def on_epoch_end(self, trainer: "Trainer", epoch: int, metrics: Mapping[str, float]) -> None:
        """After each epoch (0-based `epoch`), before its checkpoint; training + validation means."""

    def on_fit_end(self, trainer: "Trainer", summary: Mapping[str, Any]) -> None:
        """Once, after the final checkpoint, whatever the reason training stopped."""


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Tensors anywhere inside dicts, lists and tuples are moved to `device`; the rest is kept."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_precision(precision: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """`(autocast dtype or None for fp32, whether a GradScaler is needed)` for `precision` on `device`.

    `auto` means bf16 autocast on CUDA GPUs that support it and plain fp32 elsewhere; CPU always
    trains in fp32 (CPU autocast is slower than fp32 for these models and changes results).
    """
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if device.type != "cuda" or precision == "fp32":
        return None, False
    if precision == "fp16":
        return torch.float16, True  # fp16 overflows without loss scaling
    if not torch.cuda.is_bf16_supported():
        if precision == "bf16":
            raise UserError("bf16 was requested but this GPU does not support it (use --precision fp16 or fp32)")
        return None, False
    return torch.bfloat16, False
