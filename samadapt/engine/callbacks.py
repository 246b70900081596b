"""Hooks for per-step / per-epoch extras, and small helpers the training loop shares.

A command adds behaviour (MAE reconstruction pictures, plots, extra logs) by subclassing
`Callback` and overriding only the hooks it needs. Hooks run on every rank, so a hook may take
part in collective operations; one that writes files should check `trainer.is_main` first.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from samadapt.engine.logging import epoch_line, note
from samadapt.errors import UserError, warn
from samadapt.options import flag


class TrainerView(Protocol):
    """What a hook may read from the running `samadapt.engine.trainer.Trainer`."""

    model: nn.Module
    run_dir: Path
    epoch: int
    global_step: int
    epochs_planned: int  # of the current `fit`
    epoch_started: float  # time.perf_counter() when the current epoch started
    monitor: str | None
    last_validation: dict[str, float]

    @property
    def is_main(self) -> bool: ...


class Callback:
    def on_step_end(self, trainer: TrainerView, step: int, metrics: Mapping[str, float]) -> None:
        """After each optimiser step; `metrics` are averaged over ranks (plus `images_per_s`)."""

    def on_epoch_end(self, trainer: TrainerView, epoch: int, metrics: Mapping[str, float]) -> None:
        """After each epoch (0-based `epoch`), before its checkpoint; training + validation means."""

    def on_fit_end(self, trainer: TrainerView, summary: Mapping[str, Any]) -> None:
        """Once, after the final checkpoint, whatever the reason training stopped."""


class EpochLine(Callback):
    """One kept line per finished epoch on stderr, by rank 0 (the trainer adds it when `progress`)."""

    def on_epoch_end(self, trainer: TrainerView, epoch: int, metrics: Mapping[str, float]) -> None:
        if trainer.is_main:
            seconds = time.perf_counter() - trainer.epoch_started
            note(epoch_line(epoch + 1, trainer.epochs_planned, metrics.get("loss"), trainer.last_validation,
                            trainer.monitor, seconds))


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


def resolve_precision(precision: str, device: torch.device, announce: bool = False) -> tuple[torch.dtype | None, bool]:
    """`(autocast dtype or None for fp32, whether a GradScaler is needed)` for `precision` on `device`.

    `auto` means bf16 autocast on CUDA GPUs that support it and plain fp32 elsewhere. On CPU, bf16
    autocast is opt-in: on CPUs with bf16 matrix units (AVX-512 BF16, AMX) it trains SAM2 faster
    (docs/benchmarks.md, "Fine-tuning step in fp32 vs bf16 autocast"), but it rounds activations to 8 mantissa bits, so runs differ from fp32 ones; fp16 has
    no CPU kernels worth using and is refused. `announce`: say on stderr when `auto` falls back to
    fp32 on a GPU without bf16 (the run is slower than the user may expect, and nothing else says so).
    """
    if precision not in PRECISIONS:
        raise UserError(f"{flag('precision')} {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32" or (device.type != "cuda" and precision == "auto"):
        return None, False
    if device.type != "cuda":
        if precision == "fp16":
            raise UserError(f"{flag('precision')} fp16 needs a CUDA GPU; on CPU use bf16 or fp32")
        return torch.bfloat16, False
    if precision == "fp16":
        return torch.float16, True  # fp16 overflows without loss scaling
    if not torch.cuda.is_bf16_supported():
        if precision == "bf16":
            raise UserError(f"bf16 was requested but this GPU does not support it (use {flag('precision')} fp16 or fp32)")
        if announce:
            warn("--precision auto: this GPU has no bf16, so training runs in fp32 "
                 "(--precision fp16 uses fp16 autocast with loss scaling)")
        return None, False
    return torch.bfloat16, False
