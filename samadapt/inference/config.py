"""Settings of `samadapt propagate`, with their defaults and checks (light: the command module reads
the defaults at start-up)."""

from __future__ import annotations

from dataclasses import dataclass

from samadapt.modeling.sources import INIT_DEFAULT
from samadapt.options import check_all_finite, check_at_least

DEFAULT_MEMORY_MODEL = "sam2.1-hiera-tiny"
# Propagation needs the memory half, which an MAE run (an encoder) does not have.
PROPAGATE_INIT = ("random", "sam2", "ckpt")


@dataclass(frozen=True)
class PropagateConfig:
    """How `samadapt propagate` runs. `image_size` None: the checkpoint's own size (1024 for Meta's
    files), else the model's default."""

    init: str = INIT_DEFAULT
    image_size: int | None = None
    stop_when_absent: bool = True  # stop an object once its object score says it is gone

    def validate(self) -> None:
        check_all_finite(self)
        if self.image_size is not None:
            check_at_least(self, "image_size", 1)
