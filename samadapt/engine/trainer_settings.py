"""What a `Trainer` is told, in five small groups, so that a caller names only what differs from
the defaults and each group is checked in one place:

* `TrainData`: the training samples and how they are batched;
* `Schedule`: lr schedule, accumulation, clipping, precision and seeding;
* `Validation`: the validation function, how often it runs, the monitored metric and early stopping;
* `Checkpoints`: how often training state is saved, how many are kept, resuming and its checks;
* `Reporting`: logs, progress lines, callbacks and signal handling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from samadapt.engine.callbacks import Callback
from samadapt.errors import UserError

StepFn = Callable[[nn.Module, Any], tuple[torch.Tensor, Mapping[str, float], int]]
ValidateFn = Callable[[nn.Module], Mapping[str, float]]


@dataclass
class TrainData:
    """The training samples: a data set (batched here, with a resumable distributed sampler) or a
    ready `DataLoader` (used as it is; then the batching fields are ignored)."""

    dataset: Dataset | DataLoader
    batch_size: int | None = None
    num_workers: int = 0
    collate_fn: Callable | None = None
    shuffle: bool = True
    drop_last: bool = True


@dataclass
class Schedule:
    """How each optimiser step is taken. `scheduler` may be a scheduler or a factory
    `(optimizer, total_steps) -> scheduler`, because the number of steps is known only once the
    data loader exists. `accumulate_steps` micro-batches make one optimiser step."""

    scheduler: Any = None
    grad_clip: float | None = None
    accumulate_steps: int = 1
    precision: str = "auto"  # see engine.callbacks.resolve_precision
    seed: int | None = 0
    deterministic: bool = False  # deterministic kernels (slower); see engine.distributed.deterministic

    def __post_init__(self) -> None:
        if self.accumulate_steps < 1:
            raise UserError(f"gradient accumulation steps must be >= 1, got {self.accumulate_steps}")
        self.accumulate_steps = int(self.accumulate_steps)


@dataclass
class Validation:
    """`fn` gets the plain (unwrapped) model in eval mode without gradients and returns metrics;
    it runs after every epoch, or every `every_steps` optimiser steps. With `monitor` the best
    weights by that metric are kept (`mode` min or max); `patience` validations without
    improvement stop training early."""

    fn: ValidateFn | None = None
    every_steps: int | None = None
    monitor: str | None = None
    mode: str = "min"
    patience: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise UserError(f"monitor mode must be 'min' or 'max', got {self.mode!r}")
        if self.patience is not None and self.monitor is None:
            raise UserError("early stopping (patience) needs a monitored validation metric")
        if self.monitor is not None and self.fn is None:
            raise UserError(f"monitoring '{self.monitor}' needs a validation function")


@dataclass
class Checkpoints:
    """Training state is saved at the end of every `every_epochs`-th epoch, every `every_steps` steps
    and when a run stops; the `keep_last` newest are kept. `meta` (the run's configuration) is stored in every
    checkpoint, and resuming with a different one is refused except for the keys in `may_differ`.
    `trainable_only`: the model part of a checkpoint holds only the parameters that train (LoRA
    adapters and heads: a few MB instead of the whole network); the frozen rest is rebuilt by the
    caller exactly as at the start (same weights file or seed) before resuming."""

    every_steps: int | None = None
    every_epochs: int = 1
    keep_last: int = 3
    resume: bool = False
    meta: Mapping | None = None
    may_differ: Iterable[str] = ("epochs",)
    trainable_only: bool = False


@dataclass
class Reporting:
    """What a run shows and records. `progress`: a live bar and one kept line per epoch (off for
    tests and library use); `handle_signals`: SIGINT/SIGTERM finish the step and save."""

    log_every_steps: int = 1
    progress: bool = True
    tensorboard: bool = True
    callbacks: Sequence[Callback] = ()
    handle_signals: bool = True
