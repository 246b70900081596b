"""The part of the `Trainer` that makes a run resumable: its whole state as a dict (model,
optimiser, scheduler, scaler, RNG of every rank, sampler position, best-model tracking), saving it
and restoring it, so that a resumed run continues exactly where the interrupted one stopped,
mid-epoch included. Kept apart from the epoch loop (engine/trainer.py), which only calls
`save_checkpoint` and `_restore_or_start`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from samadapt.engine import checkpoint as ckpt
from samadapt.engine import distributed as dist_utils
from samadapt.errors import UserError


def load_model_state(model, state: Mapping, trainable_only: bool = False) -> None:
    """Load a checkpoint's model part; with `trainable_only` it must hold every trainable parameter
    of `model` and nothing else (the frozen rest stays as built)."""
    if not trainable_only:
        model.load_state_dict(state)
        return
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    if set(state) != trainable:
        raise UserError(f"checkpoint holds other trainable parameters than the model ({len(set(state) ^ trainable)} "
                        "differ): it was saved by a run with other adapters or other --train settings")
    model.load_state_dict(state, strict=False)


class ResumableState:
    """Mixed into `Trainer`, whose set-up provides every attribute used here."""

    def state_dict(self) -> dict:
        """Everything needed to continue exactly; call on every rank (RNG states are gathered)."""
        return {
            "model": self.model_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": dist_utils.gather_objects(ckpt.capture_rng_state()),
            "sampler": self.sampler.state_dict() if self.sampler is not None else None,
            "progress": {"epoch": self.epoch, "global_step": self.global_step, "batch_in_epoch": self.batch_in_epoch},
            "trainer": {"best_value": self.best_value, "best_step": self.best_step,
                        "bad_validations": self.bad_validations, "epoch_sums": dict(self._epoch_sums),
                        "epoch_images": self._epoch_images},
        }

    def model_state(self) -> dict:
        """The model's part of a checkpoint: its state dict, or its trainable parameters only."""
        model = dist_utils.unwrap(self.model)
        if not self.trainable_only:
            return model.state_dict()
        return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}

    def load_state_dict(self, state: Mapping) -> None:
        load_model_state(dist_utils.unwrap(self.model), state["model"], self.trainable_only)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self._load_scheduler(state["scheduler"])
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.sampler is not None and state.get("sampler") is not None:
            self.sampler.load_state_dict(state["sampler"])
        progress, extra = state["progress"], state["trainer"]
        self.epoch, self.global_step = int(progress["epoch"]), int(progress["global_step"])
        self.batch_in_epoch = int(progress["batch_in_epoch"])
        self.best_value, self.best_step = extra["best_value"], extra["best_step"]
        self.bad_validations = int(extra["bad_validations"])
        self._epoch_sums, self._epoch_images = dict(extra["epoch_sums"]), int(extra["epoch_images"])
        rng = state["rng"]
        if len(rng) == self.context.world_size:
            ckpt.restore_rng_state(rng[self.context.rank])
        elif self.seed is not None:  # another world size: exact continuation is impossible anyway
            dist_utils.seed_everything(self.seed + self.global_step, per_rank=True)

    def _load_scheduler(self, saved: Mapping) -> None:
        # LambdaLR restores its factor objects' settings (e.g. total steps) from the checkpoint. A
        # resumed run with more epochs must follow the schedule planned for the new length, so the
        # freshly built settings win and the current lr is recomputed from them.
        factors = [f for f in getattr(self.scheduler, "lr_lambdas", []) if hasattr(f, "__dict__")]
        planned = [dict(vars(f)) for f in factors]
        self.scheduler.load_state_dict(saved)
        replanned = False
        for factor, settings in zip(factors, planned):
            replanned |= vars(factor) != settings
            factor.__dict__.update(settings)
        if replanned:
            step = self.scheduler.last_epoch
            for group, factor in zip(self.optimizer.param_groups, self.scheduler.lr_lambdas):
                group["lr"] = group["initial_lr"] * factor(step)
            self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def save_checkpoint(self) -> Path | None:
        state = self.state_dict()  # collective: every rank contributes its RNG state
        path = None
        if self.is_main:
            path = ckpt.save_training_state(self.checkpoint_dir, self.global_step, state, self.meta,
                                        keep_last=self.keep_last, epoch=self.epoch)
        dist_utils.barrier()
        self._last_saved_step = self.global_step
        return path

    def _restore_or_start(self) -> Path | None:
        existing = ckpt.list_checkpoints(self.checkpoint_dir)
        if not self.resume:
            if existing:
                raise UserError("run folder already holds checkpoints: resume it or choose a new folder", self.run_dir)
            return None
        state, saved_meta, path = ckpt.load_resumable(self.checkpoint_dir)
        ckpt.check_same_config(saved_meta, self.meta, self.resume_may_differ, where=self.run_dir)
        self.load_state_dict(state)
        return path
