"""What defines a run of `samadapt finetune-memory` (training SAM2's memory path on clips of
consecutive slices): `MemoryTrainConfig`, its defaults and its checks. Light: the command module
reads the defaults at start-up."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from samadapt.finetune.config import KEEP_CHOICES
from samadapt.modeling.sources import INIT_DEFAULT
from samadapt.options import check_all_finite, check_at_least, check_choice, check_non_negative, check_positive

# the prompt on each clip's key slice: the reference mask there, or its bounding box
CLIP_PROMPTS = ("mask", "box")
# what --init may name: weights that hold SAM2's memory, random weights, or an MAE run (its encoder
# under a random memory half)
MEMORY_INIT = ("random", "sam2", "hf", "ckpt", "mae")
MEMORY_MODEL = "sam2.1-hiera-tiny"


@dataclass
class MemoryTrainConfig:
    data: str
    splits: str  # the splits.json file (`samadapt data split`)
    out: str
    fold: int = 0
    model: str | None = None  # None: the variant of the --init weights, else MEMORY_MODEL
    image_size: int = 128
    init: str = INIT_DEFAULT
    # a clip: this many consecutive slices, the first of them prompted (MedSAM2 trains on 8)
    clip_length: int = 8
    prompt: str = "mask"
    epochs: int = 20
    batch_size: int = 2  # clips per optimiser step
    lr: float = 5e-5
    weight_decay: float = 0.01
    grad_clip: float | None = 1.0
    # clips drawn per training volume and class in each epoch (each from its own random key slice)
    repeat: int = 1
    seed: int = 0
    keep: str = "best"
    resume: bool = False
    progress: bool = True

    def validate(self) -> None:
        check_all_finite(self)
        check_choice(self, "prompt", CLIP_PROMPTS)
        check_choice(self, "keep", KEEP_CHOICES)
        check_at_least(self, "clip_length", 2)  # a clip of 1 is the prompted slice alone: no memory
        for name in ("epochs", "batch_size", "repeat", "image_size"):
            check_at_least(self, name, 1)
        check_at_least(self, "fold", 0)
        check_positive(self, "lr")
        for name in ("weight_decay", "grad_clip"):
            check_non_negative(self, name)

    def run_settings(self) -> dict:
        """What must not change when a run is resumed (everything but the output and resume flags)."""
        settings = asdict(self)
        for key in ("out", "resume", "progress"):
            settings.pop(key)
        return settings

