"""What defines a pre-training run: `PretrainConfig`, its defaults (those of `samadapt pretrain`)
and its checks. Light on purpose: the command module reads the defaults at start-up."""

from __future__ import annotations

import shlex
import sys
from dataclasses import asdict, dataclass, field

from samadapt.errors import UserError
from samadapt.modeling.registry import TRAINING_IMAGE_SIZE
from samadapt.modeling.sources import INIT_DEFAULT
from samadapt.options import check_all_finite, check_at_least, check_non_negative, check_positive, flag

# Warm-up when none is given: 5 epochs, or the whole run when it is shorter (a 1-epoch smoke run
# must not be refused for a default it did not choose).
DEFAULT_WARMUP_EPOCHS = 5.0
MAE_PATHS = ("sparse", "dense")


@dataclass
class PretrainConfig:
    """Everything that defines a pre-training run (stored in its checkpoints; resume must match)."""

    data: list[str]
    out: str
    model: str = "sam2-hiera-tiny"
    image_size: int = TRAINING_IMAGE_SIZE
    init: str = INIT_DEFAULT
    mask_ratio: float = 0.75
    path: str = "sparse"
    epochs: int = 100
    batch_size: int = 8
    lr: float = 1.5e-4
    weight_decay: float = 0.05
    warmup_epochs: float | None = None  # None: DEFAULT_WARMUP_EPOCHS, at most --epochs (see `warmup`)
    grad_clip: float = 1.0
    # batches whose gradients are summed into one optimiser step (docs/distributed.md)
    grad_accumulation: int = 1
    seed: int = 0
    patch_size: int = 16
    decoder_dim: int = 256
    decoder_depth: int = 2
    norm_pix: bool = True
    checkpoint_every: int = 500
    recon_every: int = 5
    num_workers: int = 0
    command: str = field(default_factory=lambda: shlex.join(["samadapt", *sys.argv[1:]]))

    def validate(self) -> None:
        check_all_finite(self)
        from samadapt.modeling.masking import MASK_UNIT_PIXELS, check_mask_ratio, unit_grid

        check_mask_ratio(self.mask_ratio)
        unit_grid(self.image_size)
        if self.path not in MAE_PATHS:
            raise UserError(f"{flag('path')} must be sparse or dense, got {self.path!r}")
        for name in ("epochs", "batch_size", "grad_accumulation"):
            check_at_least(self, name, 1)
        check_positive(self, "lr")
        for name in ("weight_decay", "grad_clip", "warmup_epochs", "recon_every", "checkpoint_every"):
            check_non_negative(self, name)
        check_at_least(self, "num_workers", 0)
        if not 0 <= self.warmup() <= self.epochs:
            raise UserError(f"{flag('warmup_epochs')} must be in [0, {flag('epochs')}={self.epochs}], "
                            f"got {self.warmup_epochs}")
        if MASK_UNIT_PIXELS % self.patch_size:
            raise UserError(f"patch size {self.patch_size} must divide the mask unit ({MASK_UNIT_PIXELS} pixels)")
        if not self.data:
            raise UserError(f"give at least one {flag('data')} folder or file")

    def warmup(self) -> float:
        """Warm-up in epochs: the one given, else the default cut to the length of the run."""
        return min(DEFAULT_WARMUP_EPOCHS, self.epochs) if self.warmup_epochs is None else self.warmup_epochs

    def resume_key(self) -> dict:
        """What a resumed run must share with the original (epochs and logging cadence may change)."""
        key = asdict(self)
        for free in ("epochs", "command", "recon_every", "checkpoint_every", "num_workers", "out"):
            key.pop(free)
        # the trainer checks it on resume as its own `accumulate_steps`; leaving it out here keeps
        # the stored settings of runs without accumulation the same as they have always been
        if key["grad_accumulation"] == 1:
            key.pop("grad_accumulation")
        return key
