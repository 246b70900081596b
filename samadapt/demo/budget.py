"""How big each stage of `samadapt demo` is: the full run and the `--quick` smoke run.

The full budget is sized for a 2-core CPU with no GPU: every stage together should finish within
about 15 minutes when the machine is not shared. Phantom lesions are small (radius 1-4 % of the
image width, as in real FA), and SAM2's mask decoder predicts at a quarter of the input size, so
fine-tuning needs at least 256 px for a lesion to cover several output cells.
Labelled phantoms cost nothing, and for a fixed number of training steps many distinct frames
generalise better than many epochs over few: with the same SAM2 setup, 48 frames x 12 epochs gave
test Dice 0.36, 160 frames (96 for training) x 5 epochs 0.45, and x 10 epochs 0.65; validation Dice
was still rising after 5 epochs. Ten epochs fit the budget because fine-tuning runs under bf16
autocast where the CPU has bf16 matrix units (1.4x faster per step; same test Dice within 0.01 of
fp32 on these phantoms).
The whole model trains (`all`) at a high learning rate: with a random encoder, training only the
prompts and the decoder left validation Dice at 0 after 8 epochs (the random features do not
single out the lesions). The presence gate lets lesion-free frames come out empty; it learns only
with the 10-epoch budget (5 epochs left its loss at the class prior), and then for the random-init
model (4 of 4 empty test frames right) more than for the MAE-init one (1 of 4).
The quick budget only checks that every stage runs and writes its files; its scores mean nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Budget:
    name: str
    # generated data (phantom mode only)
    fa_frames: int  # labelled FA frames (two per eye)
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
    finetune_presence: bool  # presence gate: lesion-free frames predicted empty (finetune/model.py)
    finetune_bf16: bool  # bf16 autocast where the hardware has fast bf16 (pipeline.finetune_precision)
    # few-shot
    fewshot_size: int
    fewshot_volume_size: int
    fewshot_epochs: int
    fewshot_shots: tuple[int, ...] = field(default=(1, 3, 5))
    fewshot_volume_shots: int = 3
    anatomy_depth: int = 24  # slices per 3D anatomy volume

    def as_dict(self) -> dict:
        return asdict(self)


FULL = Budget(
    name="full", fa_frames=160, fa_unlabeled=64, anatomy_images=16, anatomy_volumes=3,
    pretrain_size=256, pretrain_epochs=8, pretrain_batch=8, pretrain_lr=1.5e-4,
    finetune_size=256, finetune_epochs=10, finetune_batch=4, finetune_lr=1e-3, finetune_train="all",
    finetune_presence=True, finetune_bf16=True,
    fewshot_size=128, fewshot_volume_size=64, fewshot_epochs=60, fewshot_shots=(1, 3, 5), fewshot_volume_shots=3, anatomy_depth=24,
)

QUICK = Budget(
    name="quick", fa_frames=8, fa_unlabeled=8, anatomy_images=5, anatomy_volumes=2,
    pretrain_size=64, pretrain_epochs=1, pretrain_batch=4, pretrain_lr=1.5e-4,
    finetune_size=64, finetune_epochs=1, finetune_batch=2, finetune_lr=1e-3, finetune_train="decoder",
    finetune_presence=True, finetune_bf16=False,
    fewshot_size=64, fewshot_volume_size=64, fewshot_epochs=2, fewshot_shots=(1, 2), fewshot_volume_shots=1,
    anatomy_depth=8,
)
