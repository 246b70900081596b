"""One training loop for every training command (MAE pre-training, fine-tuning, few-shot decoders).

The command supplies what differs — the model, a `step_fn` computing the loss of one batch, the
optimiser, the data and an optional `validate_fn` — and the `Trainer` does the rest the same way
everywhere: distributed data parallel (under torchrun), gradient accumulation, clipping, bf16
autocast on CUDA (fp32 on CPU), per-step lr schedule, metrics reduced across ranks and logged by
rank 0, best-model tracking with early stopping, checkpoints that resume exactly (mid-epoch
included), and a clean stop on SIGINT/SIGTERM (the current step finishes, a checkpoint is saved).

Example::

    def step_fn(model, batch):
        images, masks = batch
        loss = dice_loss(model(images), masks)
        return loss, {"dice_loss": loss.item()}, images.shape[0]

    def validate_fn(model):          # gets the plain (unwrapped) model in eval mode, no grad
        return {"val_dice": evaluate(model, val_loader)}

    optimizer = adamw(adamw_param_groups(model, lr=1e-4, weight_decay=0.05))
    trainer = Trainer(
        model, step_fn, optimizer, TrainData(train_dataset, batch_size=8), run_dir="runs/ft1",
        schedule=Schedule(lambda opt, total: cosine_with_warmup(opt, total, warmup_steps=total // 20),
                          grad_clip=1.0),
        validation=Validation(validate_fn, monitor="val_dice", mode="max", patience=10),
        checkpoints=Checkpoints(every_steps=500, resume=args.resume, meta=config_dict),
    )
    summary = trainer.fit(epochs=50)   # {"status": "completed", "global_step": ..., "best": {...}}

The settings groups and their defaults are in engine/trainer_settings.py; saving and restoring the
training state is in engine/trainer_state.py.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from samadapt.engine import checkpoint as ckpt
from samadapt.engine import distributed as dist_utils
from samadapt.engine.callbacks import EpochLine, move_to_device, resolve_precision
from samadapt.engine.logging import MetricLogger, ProgressBar, note
from samadapt.engine.signals import StopRequest, stop_on_signals
from samadapt.engine.trainer_settings import (Checkpoints, Reporting, Schedule, StepFn, TrainData, Validation,
                                              ValidateFn)
from samadapt.engine.trainer_state import ResumableState
from samadapt.errors import UserError

__all__ = ["Checkpoints", "Reporting", "Schedule", "StepFn", "TrainData", "Trainer", "Validation", "ValidateFn"]


class Trainer(ResumableState):
    def __init__(
        self, model: nn.Module, step_fn: StepFn, optimizer: torch.optim.Optimizer, data: TrainData, *,
        run_dir: str | Path, schedule: Schedule | None = None, validation: Validation | None = None,
        checkpoints: Checkpoints | None = None, reporting: Reporting | None = None,
        device: str | torch.device | None = None, ddp_kwargs: Mapping | None = None,
    ):
        schedule, validation = schedule or Schedule(), validation or Validation()
        checkpoints, reporting = checkpoints or Checkpoints(), reporting or Reporting()
        if schedule.deterministic:
            dist_utils.deterministic(True)
        self.context = dist_utils.init_distributed(device=device)
        self.device = self.context.device
        self.model = model.to(self.device)
        self.step_fn, self.optimizer, self.validate_fn = step_fn, optimizer, validation.fn
        self.run_dir = Path(run_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.monitor, self.monitor_mode, self.patience = validation.monitor, validation.mode, validation.patience
        self.grad_clip, self.accumulate_steps = schedule.grad_clip, schedule.accumulate_steps
        self.validate_every_steps, self.checkpoint_every_steps = validation.every_steps, checkpoints.every_steps
        self.keep_last, self.resume = checkpoints.keep_last, checkpoints.resume
        self.checkpoint_every_epochs = max(1, checkpoints.every_epochs)
        self.trainable_only = checkpoints.trainable_only
        self.resume_may_differ = tuple(checkpoints.may_differ)
        progress = reporting.progress
        self.callbacks = list(reporting.callbacks) + ([EpochLine()] if progress else [])
        self.seed = schedule.seed
        self.log_every_steps, self.progress = max(1, reporting.log_every_steps), progress
        self.tensorboard, self.handle_signals = reporting.tensorboard, reporting.handle_signals
        self.ddp_kwargs = dict(ddp_kwargs or {})
        self.autocast_dtype, use_fp16_scaler = resolve_precision(schedule.precision, self.device,
                                                                 announce=self.context.is_main)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_fp16_scaler)
        self.loader, self.sampler = self._make_loader(data)
        self.batch_size = self.loader.batch_size or 1
        self.meta = {"run": dict(checkpoints.meta or {}), "trainer": {
            "batch_size_per_rank": self.batch_size, "world_size": self.context.world_size,
            "accumulate_steps": self.accumulate_steps, "grad_clip": self.grad_clip, "precision": schedule.precision,
            "seed": self.seed, "monitor": self.monitor, "monitor_mode": self.monitor_mode}}
        self._scheduler_or_factory = schedule.scheduler
        self.scheduler = None
        self.ddp_model: nn.Module = self.model
        self.global_step = self.epoch = self.batch_in_epoch = 0
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.bad_validations = 0
        self._epoch_sums: dict[str, float] = {}
        self._epoch_images = 0
        self._stop = StopRequest()
        self.logger: MetricLogger | None = None
        self.last_validation: dict[str, float] = {}

    # ----------------------------------------------------------------------------- set-up
    @property
    def is_main(self) -> bool:
        return self.context.is_main

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.context.world_size * self.accumulate_steps

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self._batches_per_epoch() / self.accumulate_steps)

    def _batches_per_epoch(self) -> int:
        if self.sampler is not None:  # the full epoch, whatever position a resumed sampler is at
            per_rank = self.sampler.total_size // self.sampler.num_replicas
            return per_rank // self.batch_size if self.loader.drop_last else math.ceil(per_rank / self.batch_size)
        return len(self.loader)

    def _make_loader(self, train: TrainData):
        data, batch_size = train.dataset, train.batch_size
        if isinstance(data, DataLoader):
            sampler = data.sampler if isinstance(data.sampler, dist_utils.ResumableDistributedSampler) else None
            return data, sampler
        if batch_size is None or batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {batch_size}")
        if len(data) == 0:
            raise UserError("the training data set is empty")
        sampler = dist_utils.ResumableDistributedSampler(data, shuffle=train.shuffle, seed=self.seed or 0)
        self._loader_generator = torch.Generator()
        loader = DataLoader(
            data, batch_size=batch_size, sampler=sampler, num_workers=train.num_workers, collate_fn=train.collate_fn,
            drop_last=train.drop_last, pin_memory=self.device.type == "cuda", generator=self._loader_generator,
        )
        if len(loader) == 0:
            raise UserError(f"batch size {batch_size} is larger than this rank's {len(sampler)} training samples "
                            "(lower the batch size or turn off drop_last)")
        return loader, sampler

    def _resolve_scheduler(self, total_steps: int):
        candidate = self._scheduler_or_factory
        if candidate is None or hasattr(candidate, "state_dict"):
            return candidate
        return candidate(self.optimizer, total_steps)

    # ----------------------------------------------------------------------------- training
    def fit(self, epochs: int, max_steps: int | None = None) -> dict:
        """Train until `epochs` epochs (or `max_steps` optimiser steps) are done; returns a summary."""
        if epochs < 1:
            raise UserError(f"epochs must be >= 1, got {epochs}")
        started = time.perf_counter()
        self.epochs_planned = epochs
        total_steps = epochs * self.steps_per_epoch if max_steps is None else min(max_steps, epochs * self.steps_per_epoch)
        self.scheduler = self._resolve_scheduler(total_steps)
        if self.seed is not None:
            dist_utils.seed_everything(self.seed, per_rank=True)
        resumed_from = self._restore_or_start()
        self.ddp_model = dist_utils.wrap_ddp(self.model, self.device, **self.ddp_kwargs)
        self.logger = MetricLogger(self.run_dir, enabled=self.is_main, tensorboard=self.tensorboard,
                                   resume_after_step=self.global_step if resumed_from else None)
        self._last_saved_step = self.global_step if resumed_from else -1
        status = "completed"
        with stop_on_signals(self.handle_signals) as self._stop:
            while self.epoch < epochs and status == "completed":
                if max_steps is not None and self.global_step >= max_steps:
                    status = "max_steps"
                    break
                status = self._train_one_epoch(max_steps)
        if status == "interrupted" and self.is_main and self.progress:  # the save can take a while
            note(f"stopping at step {self.global_step}: saving a checkpoint to {self.checkpoint_dir}")
        if self._last_saved_step != self.global_step:
            self.save_checkpoint()
        summary = self._summary(status, resumed_from, time.perf_counter() - started)
        for callback in self.callbacks:
            callback.on_fit_end(self, summary)
        self.logger.close()
        return summary

    def _train_one_epoch(self, max_steps: int | None) -> str:
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch)
        if getattr(self, "_loader_generator", None) is not None:
            # Worker seeds come from this generator: fix it per epoch so a resumed run draws the same.
            self._loader_generator.manual_seed((self.seed or 0) * 1_000_003 + self.epoch)
        # A resumable sampler knows what is left (even after a change of world size); a plain
        # loader is fast-forwarded below instead.
        total_batches = self.batch_in_epoch + len(self.loader) if self.sampler is not None else len(self.loader)
        batches = iter(self.loader)
        if self.sampler is None and self.batch_in_epoch:  # plain loader: fast-forward instead
            for _ in range(self.batch_in_epoch):
                next(batches)
        self.model.train()
        self.epoch_started = time.perf_counter()
        bar = ProgressBar(self.steps_per_epoch, f"epoch {self.epoch + 1}/{self.epochs_planned}",
                          enabled=self.is_main and self.progress)
        status = "completed"
        try:
            while self.batch_in_epoch < total_batches:
                group = min(self.accumulate_steps, total_batches - self.batch_in_epoch)
                metrics, images = self._optimizer_step(batches, group)
                stop = self._reduce_and_log(metrics, images, bar)
                if self.validate_every_steps and self.global_step % self.validate_every_steps == 0:
                    if self._validate_and_track():
                        status = "early_stopping"
                if self.checkpoint_every_steps and self.global_step % self.checkpoint_every_steps == 0:
                    self.save_checkpoint()
                if stop:
                    return "interrupted"
                if status != "completed":
                    return status
                if max_steps is not None and self.global_step >= max_steps:
                    return "max_steps"
        finally:
            bar.close()
        epoch_metrics = {k: v / max(1, self._epoch_images) for k, v in self._epoch_sums.items()}
        if self.validate_fn is not None and not self.validate_every_steps:
            if self._validate_and_track():
                status = "early_stopping"
        self.last_train = epoch_metrics
        self.logger.log("epoch", self.global_step, {**{f"train_{k}": v for k, v in epoch_metrics.items()},
                                                    **self.last_validation}, epoch=self.epoch + 1)
        for callback in self.callbacks:
            callback.on_epoch_end(self, self.epoch, {**epoch_metrics, **self.last_validation})
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        self._epoch_sums, self._epoch_images = {}, 0
        if self.epoch % self.checkpoint_every_epochs == 0:  # fit() saves the last epoch in any case
            self.save_checkpoint()
        return status

    def _optimizer_step(self, batches, group: int) -> tuple[dict[str, float], int]:
        """Forward/backward `group` micro-batches, then one optimiser step. Returns local metrics."""
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        images = 0
        for index in range(group):
            batch = move_to_device(next(batches), self.device)
            last = index == group - 1
            # Skip the gradient all-reduce on all but the last micro-batch of an accumulation group.
            sync = contextlib.nullcontext() if last or self.ddp_model is self.model else self.ddp_model.no_sync()
            with sync:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
                    loss, metrics, n_images = self.step_fn(self.ddp_model, batch)
                self.scaler.scale(loss / group).backward()
            n_images = int(n_images)
            images += n_images
            for key, value in {"loss": loss.detach().float().item(), **metrics}.items():
                sums[key] = sums.get(key, 0.0) + float(value) * n_images
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        self.global_step += 1
        self.batch_in_epoch += group
        if self.sampler is not None:
            self.sampler.advance(group * self.batch_size)
        return {k: v / max(1, images) for k, v in sums.items()}, images

    def _reduce_and_log(self, metrics: dict[str, float], images: int, bar: ProgressBar) -> bool:
        """Average metrics over ranks, log them; returns True when any rank asked to stop."""
        keys = sorted(metrics)
        flags = [1.0 if self._stop.requested else 0.0, 0.0 if math.isfinite(metrics["loss"]) else 1.0]
        packed = torch.tensor([metrics[k] for k in keys] + flags, dtype=torch.float64)
        packed = dist_utils.all_reduce_mean(packed)  # one collective per step for metrics and flags
        reduced = dict(zip(keys, packed[: len(keys)].tolist()))
        stop, non_finite = bool(packed[-2] > 0), bool(packed[-1] > 0)
        if non_finite:
            raise UserError(f"training loss became {metrics['loss']} at step {self.global_step} "
                            "(lower the learning rate, enable gradient clipping, or check the data)")
        global_images = images * self.context.world_size
        for key, value in reduced.items():
            self._epoch_sums[key] = self._epoch_sums.get(key, 0.0) + value * global_images
        self._epoch_images += global_images
        rate = bar.update(reduced["loss"], global_images)
        if self.global_step % self.log_every_steps == 0:
            lrs = {f"lr_{g.get('name', i)}" if len(self.optimizer.param_groups) > 1 else "lr": g["lr"]
                   for i, g in enumerate(self.optimizer.param_groups)}
            self.logger.log("train", self.global_step, {**reduced, **lrs}, epoch=self.epoch + 1)
        for callback in self.callbacks:
            callback.on_step_end(self, self.global_step, {**reduced, "images_per_s": rate})
        return stop

    def _validate_and_track(self) -> bool:
        """Run validation, log it, keep the best weights; returns True when patience ran out."""
        model = dist_utils.unwrap(self.model)
        model.eval()
        try:
            with torch.no_grad(), torch.autocast(self.device.type, dtype=self.autocast_dtype,
                                                 enabled=self.autocast_dtype is not None):
                raw = dict(self.validate_fn(model))
        finally:
            model.train()
        keys = sorted(raw)
        values = dist_utils.all_reduce_mean(torch.tensor([float(raw[k]) for k in keys], dtype=torch.float64))
        self.last_validation = dict(zip(keys, values.tolist()))
        if self.validate_every_steps:
            self.logger.log("validation", self.global_step, self.last_validation, epoch=self.epoch + 1)
        if self.monitor is None:
            return False
        if self.monitor not in self.last_validation:
            raise UserError(f"monitored metric '{self.monitor}' is not among the validation metrics "
                            f"{sorted(self.last_validation)}")
        value = self.last_validation[self.monitor]
        better = self.best_value is None or (value < self.best_value if self.monitor_mode == "min" else value > self.best_value)
        if better:
            self.best_value, self.best_step, self.bad_validations = value, self.global_step, 0
            if self.is_main:
                ckpt.write_checkpoint_file(
                    self.checkpoint_dir / "best.pt", {"model": self.model_state(),
                                                      "metrics": dict(self.last_validation)},
                    self.meta, step=self.global_step, epoch=self.epoch)
        else:
            self.bad_validations += 1
        return self.patience is not None and self.bad_validations >= self.patience

    # ----------------------------------------------------------------------------- summary
    def _summary(self, status: str, resumed_from: Path | None, seconds: float) -> dict:
        latest = ckpt.list_checkpoints(self.checkpoint_dir) if self.is_main else []
        return {
            "status": status,
            "epochs_completed": self.epoch,
            "global_step": self.global_step,
            "global_batch_size": self.global_batch_size,
            "last_train": dict(getattr(self, "last_train", {})),
            "last_validation": dict(self.last_validation),
            "best": {"metric": self.monitor, "value": self.best_value, "step": self.best_step},
            "checkpoint": str(latest[0]) if latest else None,
            "resumed_from": str(resumed_from) if resumed_from else None,
            "run_dir": str(self.run_dir),
            "seconds": seconds,
        }
