"""How big each stage of `samadapt demo` is: the full run and the `--quick` smoke run.

The full budget puts the demo in MAE-SAM2's regime: few labelled frames and many unlabeled ones
(40x as many), on a 2-core CPU with no GPU, sized for every stage together to fit 15 minutes when
the machine is not shared (the measured stage times are in docs/results.md, "Demo on synthetic FA
phantoms"; they move with the CPU, so they are not repeated here). Labelled phantoms are split by eye into fixed training, validation and test
counts; only the training and validation frames count as "labelled data" (the test frames are held
out and scored, never used for selection). MAE pre-trains at half the fine-tuning resolution, a quarter
of the tokens per image, so many more optimiser steps fit the same time (Hiera's position embedding interpolates to the
fine-tuning size). Both fine-tuning runs get the same epochs, batch and lr, and both train LoRA
adapters on the Hiera trunk with the decoder and class prompts (better on validation frames than
training the whole model, from either start); each arm uses the
recipe for its start (`finetune/recipe.py`: scratch for random weights, layer-wise decay for the
MAE encoder). Phantom lesions are small (radius 1-4 % of the image width, as in real FA) and
SAM2's mask decoder predicts at a quarter of the input size, so fine-tuning runs at 256 px.
How the values were chosen, on validation frames only, is in docs/results.md.
The quick budget only checks that every stage runs and writes its files; its scores mean nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Budget:
    name: str
    # generated data (phantom mode only)
    fa_train: int  # labelled FA frames to train on (two per eye)
    fa_val: int  # labelled frames for validation (best epoch)
    fa_test: int  # labelled frames held out and scored
    fa_unlabeled: int  # unlabeled FA frames for MAE pre-training
    anatomy_images: int  # 2D anatomy phantoms for the few-shot sweep
    anatomy_volumes: int  # 3D anatomy volumes (one gives the shots, the others are scored)
    # MAE pre-training
    pretrain_size: int
    pretrain_epochs: int
    pretrain_batch: int
    pretrain_lr: float
    # fine-tuning (both starting points get the same budget)
    finetune_size: int
    finetune_epochs: int
    finetune_batch: int
    finetune_lr: float
    finetune_train: str
    finetune_presence: bool  # presence gate: lesion-free frames predicted empty (modeling/class_prompts.py)
    finetune_bf16: bool  # bf16 autocast where the hardware has fast bf16 (pipeline.finetune_precision)
    # few-shot
    fewshot_size: int
    fewshot_volume_size: int
    fewshot_epochs: int
    fewshot_shots: tuple[int, ...] = field(default=(1, 3, 5))
    fewshot_volume_shots: int = 3
    anatomy_depth: int = 24  # slices per 3D anatomy volume

    @property
    def fa_frames(self) -> int:
        return self.fa_train + self.fa_val + self.fa_test

    def as_dict(self) -> dict:
        return {**asdict(self), "fa_frames": self.fa_frames}


FULL = Budget(
    name="full", fa_train=16, fa_val=8, fa_test=40, fa_unlabeled=640, anatomy_images=16, anatomy_volumes=3,
    pretrain_size=128, pretrain_epochs=12, pretrain_batch=16, pretrain_lr=1.5e-4,
    finetune_size=256, finetune_epochs=30, finetune_batch=4, finetune_lr=1e-3, finetune_train="lora",
    finetune_presence=True, finetune_bf16=True,
    fewshot_size=128, fewshot_volume_size=64, fewshot_epochs=60, fewshot_shots=(1, 3, 5), fewshot_volume_shots=3, anatomy_depth=24,
)

QUICK = Budget(
    name="quick", fa_train=4, fa_val=2, fa_test=2, fa_unlabeled=8, anatomy_images=5, anatomy_volumes=2,
    pretrain_size=64, pretrain_epochs=1, pretrain_batch=4, pretrain_lr=1.5e-4,
    finetune_size=64, finetune_epochs=1, finetune_batch=2, finetune_lr=1e-3, finetune_train="decoder",
    finetune_presence=True, finetune_bf16=False,
    fewshot_size=64, fewshot_volume_size=64, fewshot_epochs=2, fewshot_shots=(1, 2), fewshot_volume_shots=1,
    anatomy_depth=8,
)
