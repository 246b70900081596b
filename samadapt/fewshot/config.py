"""What defines few-shot work: the feature cache's settings (`CacheSettings`, shared by the
prompted baseline and prediction) and few-shot training (`FewShotConfig`), with the defaults of
the `samadapt fewshot` commands and their checks. Light on purpose: the command module reads the
defaults at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from samadapt.modeling.registry import TRAINING_IMAGE_SIZE
from samadapt.modeling.sources import INIT_DEFAULT
from samadapt.options import check_all_finite, check_at_least, check_choice, check_non_negative, check_positive


@dataclass(frozen=True)
class CacheSettings:
    """How the frozen encoder runs: for the cache, and likewise for the zero-shot baseline (a fair
    comparison) and for prediction with a few-shot run (batch size)."""

    model: str = "sam2-hiera-tiny"
    init: str = INIT_DEFAULT
    image_size: int = TRAINING_IMAGE_SIZE
    batch_size: int = 4  # images/slices per encoder call

    def validate(self) -> None:
        check_all_finite(self)
        check_at_least(self, "batch_size", 1)
        check_at_least(self, "image_size", 1)


@dataclass
class FewShotConfig:
    shots: int = 5
    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 0
    loss: str = "dice+bce"
    batch_size: int = 2
    prototypes_per_class: int = 1
    background_prototypes: int = 1
    warmup_steps: int = 10
    grad_clip: float = 1.0  # 0: no clipping

    def validate(self) -> None:
        """Every value checked on its own (the shots against the data in `select_shots`)."""
        check_all_finite(self)
        for name in ("shots", "epochs", "batch_size", "prototypes_per_class", "background_prototypes"):
            check_at_least(self, name, 1)
        check_at_least(self, "warmup_steps", 0)
        check_positive(self, "lr")
        for name in ("weight_decay", "grad_clip"):
            check_non_negative(self, name)


# Where `fewshot predict --propagate` takes the memory's first frames from: the decoder's own most
# confident slices of the volume, or the run's support slices (their image and labels).
SEED_SLICES = ("confident", "support")


@dataclass(frozen=True)
class PropagationSeeds:
    """How `samadapt fewshot predict --propagate` seeds SAM2's memory on a volume."""

    seed_slices: str = "confident"
    seed_count: int = 3  # per class: slices of the volume (confident) or support slices (support)

    def validate(self) -> None:
        check_all_finite(self)
        check_choice(self, "seed_slices", SEED_SLICES)
        check_at_least(self, "seed_count", 1)
