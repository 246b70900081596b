"""What defines a fine-tuning run: `FinetuneConfig`, its defaults (those of `samadapt finetune` and
`samadapt ablate-loss`) and its checks. Light on purpose: the command module reads the defaults at
start-up."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from samadapt.errors import UserError
from samadapt.modeling.registry import TRAINING_IMAGE_SIZE
from samadapt.modeling.sources import INIT_DEFAULT
from samadapt.options import (check_all_finite, check_at_least, check_choice, check_finite, check_fraction, check_non_negative,
                              check_positive, flag)

KEEP_CHOICES = ("best", "last")
LORA_FIELDS = ("lora_rank", "lora_alpha", "lora_targets", "lora_decoder")


@dataclass
class FinetuneConfig:
    data: str
    splits: str  # the splits.json file (`samadapt data split`)
    out: str
    fold: int = 0
    model: str = "sam2-hiera-tiny"
    image_size: int = TRAINING_IMAGE_SIZE
    init: str = INIT_DEFAULT
    loss: str = "dice+bce"
    train: str = "decoder"
    freeze_stages: int = 0
    # --train lora (modeling/lora.py): adapters of this rank and scale (alpha / rank) on the trunk
    # layers named by lora_targets, and on the mask decoder's transformer with lora_decoder
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: str = "qkv,proj,mlp"
    lora_decoder: bool = False
    epochs: int = 50
    batch_size: int = 4
    lr: float = 1e-4
    # how the encoder trains (finetune/recipe.py): "auto" = scratch for random weights, pretrained
    # (layer decay, lower encoder lr, longer warm-up) otherwise; the three values below override it
    recipe: str = "auto"
    encoder_lr: float | None = None
    layer_decay: float | None = None
    weight_decay: float = 0.01
    warmup_fraction: float | None = None
    tokens_per_class: int = 4
    prompt: str = "none"
    presence: bool = False  # train SAM2's object-score head as a per-class presence gate (modeling/class_prompts.py)
    augment: bool = True
    repeat: int = 1  # training cases seen this many times per epoch (tiny data sets)
    seed: int = 0
    patience: int | None = None
    # "best": keep the epoch with the best validation Dice; "last": keep the model at the end of the
    # budget, so that in cross-validation the held-out fold is scored but never used for selection.
    keep: str = "best"
    grad_clip: float | None = 1.0  # 0 or None: no clipping
    # batches whose gradients are summed into one optimiser step: the batch of a larger GPU on a
    # smaller one (global batch = batch_size x processes x grad_accumulation; docs/distributed.md)
    grad_accumulation: int = 1
    # "auto": bf16 autocast on GPUs that have it, fp32 on CPU; "bf16" opts in on CPU too (faster on
    # CPUs with bf16 units, results differ slightly from fp32); see engine.callbacks.resolve_precision
    precision: str = "auto"
    num_workers: int = 0
    resume: bool = False
    progress: bool = True

    def validate(self) -> None:
        """Every value checked on its own (files, the split and the model are checked when read)."""
        check_all_finite(self)
        from samadapt.finetune.prompts import PROMPT_MODES

        check_choice(self, "prompt", PROMPT_MODES)
        check_choice(self, "keep", KEEP_CHOICES)
        for name in ("epochs", "batch_size", "grad_accumulation", "repeat", "patience", "tokens_per_class"):
            check_at_least(self, name, 1)
        for name in ("fold", "freeze_stages", "num_workers"):
            check_at_least(self, name, 0)
        for name in ("lr", "encoder_lr"):
            check_positive(self, name)
        for name in ("weight_decay", "grad_clip"):
            check_non_negative(self, name)
        check_finite(self, "layer_decay")  # its range depends on the recipe (finetune/recipe.py)
        check_fraction(self, "warmup_fraction", high_open=True)
        self._validate_lora()
        if self.image_size is not None and self.image_size < 1:
            raise UserError(f"{flag('image_size')} {self.image_size}: must be a positive number of pixels")

    def _validate_lora(self) -> None:
        from samadapt.modeling.lora import parse_targets

        if self.train != "lora":
            for name in LORA_FIELDS:
                if getattr(self, name) != getattr(FinetuneConfig, name):
                    raise UserError(f"{flag(name)} applies only to {flag('train')} lora, not {flag('train')} {self.train}")
            return
        check_at_least(self, "lora_rank", 1)
        check_positive(self, "lora_alpha")
        parse_targets(self.lora_targets)

    def lora_settings(self):
        """The adapters of `--train lora` as `modeling.lora.LoraSettings`."""
        from samadapt.modeling.lora import LoraSettings, parse_targets

        return LoraSettings(rank=self.lora_rank, alpha=float(self.lora_alpha), targets=parse_targets(self.lora_targets),
                            decoder=self.lora_decoder)

    def run_settings(self) -> dict:
        """What must not change when a run is resumed (everything but the output and resume flags)."""
        settings = asdict(self)
        for key in ("out", "resume", "progress", "num_workers"):
            settings.pop(key)
        # the trainer checks it on resume as its own `accumulate_steps`; leaving it out here keeps
        # the stored settings of runs without accumulation the same as they have always been
        if settings["grad_accumulation"] == 1:
            settings.pop("grad_accumulation")
        if self.train != "lora":  # likewise for the settings of runs that train no adapters
            for name in LORA_FIELDS:
                settings.pop(name)
        return settings
