"""What defines an nnU-Net baseline run: `NnunetConfig`, its defaults (those of `samadapt baseline
nnunet`) and its checks. Light on purpose: the command module reads the defaults at start-up."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field

from samadapt.errors import UserError
from samadapt.options import check_all_finite, check_at_least, flag

CONFIGURATIONS = ("2d", "3d_fullres")
DEVICES = ("cpu", "cuda")
PARTS = ("test", "val")


@dataclass
class NnunetConfig:
    """nnU-Net v2 trained on the train part of one fold, scored on `part` of the same splits.

    nnU-Net's own schedule is 1000 epochs of 250 iterations; on a CPU budget the run is shortened to
    `epochs` x `iterations_per_epoch` (both recorded), with nnU-Net's planning, preprocessing,
    augmentation, loss and poly learning-rate schedule otherwise unchanged. The model scored is the
    one at the end of the budget (nnU-Net's checkpoint_final), so no test case selects anything.
    """

    data: str
    splits: str
    out: str
    fold: int = 0
    part: str = "test"
    configuration: str = "2d"
    epochs: int = 50
    iterations_per_epoch: int = 50
    device: str = "cpu"
    seed: int = 0
    threads: int | None = None
    image_size: int | None = None
    # nnU-Net mirrors every axis in training and at test time without swapping labels: a class that
    # is defined by its side (left/right lung) cannot be learned then; False uses its no-mirroring variant
    mirroring: bool = True
    command: str = field(default_factory=lambda: shlex.join(["samadapt", *sys.argv[1:]]))

    def validate(self) -> None:
        check_all_finite(self)
        if self.configuration not in CONFIGURATIONS:
            raise UserError(f"{flag('configuration')} must be one of {', '.join(CONFIGURATIONS)}, "
                            f"got {self.configuration!r}")
        if self.device not in DEVICES:
            raise UserError(f"{flag('device')} must be cpu or cuda, got {self.device!r}")
        if self.part not in PARTS:
            raise UserError(f"{flag('part')} must be test or val, got {self.part!r}")
        for name in ("epochs", "iterations_per_epoch"):
            check_at_least(self, name, 1)
        check_at_least(self, "fold", 0)
        if self.threads is not None:
            check_at_least(self, "threads", 1)
        if self.image_size is not None:
            check_at_least(self, "image_size", 16)
