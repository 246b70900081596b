"""Convolutional baselines trained through the same fine-tuning command: MONAI's `UNet` and `AttentionUnet`.

They take the same normalised (B, 3, S, S) input and return the same multi-label logits (B, C, S, S)
as `ClassPromptSegmenter`, so the loss, data, augmentation, schedule and reports are shared and only
the network differs. Channel widths follow MONAI's usual 2D configuration (16 -> 256, 4 poolings).
"""

from __future__ import annotations

import torch
from torch import nn

from samadapt.errors import UserError
from samadapt.options import flag

BASELINES = ("unet", "attention-unet")
CHANNELS = (16, 32, 64, 128, 256)
STRIDES = (2, 2, 2, 2)


class ConvBaseline(nn.Module):
    """A MONAI 2D network with one output channel per foreground class."""

    kind = "baseline"

    def __init__(self, name: str, class_names: list[str], image_size: int):
        super().__init__()
        from monai.networks.nets import AttentionUnet, UNet

        if name not in BASELINES:
            raise UserError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
        multiple = 2 ** len(STRIDES)
        if image_size % multiple:
            raise UserError(f"{flag('image_size')} {image_size}: {name} needs a multiple of {multiple}")
        self.name = name
        self.class_names = list(class_names)
        self.image_size = int(image_size)
        if name == "unet":
            self.net = UNet(spatial_dims=2, in_channels=3, out_channels=len(class_names), channels=CHANNELS,
                            strides=STRIDES, num_res_units=2, norm="batch")
        else:
            self.net = AttentionUnet(spatial_dims=2, in_channels=3, out_channels=len(class_names),
                                     channels=CHANNELS, strides=STRIDES)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def forward(self, pixel_values: torch.Tensor, **_prompts) -> torch.Tensor:
        """Logits (B, C, S, S); prompts are not used by these networks."""
        return self.net(pixel_values)

    def configure_trainable(self, mode: str, freeze_stages: int = 0) -> dict[str, int]:
        if mode != "all" or freeze_stages:
            raise UserError(f"{flag('model')} {self.name} trains as a whole: use {flag('train')} all without {flag('freeze_stages')}")
        total = sum(p.numel() for p in self.parameters())
        return {"trainable": total, "frozen": 0}

    def param_groups(self, lr: float, encoder_lr: float | None, weight_decay: float,
                     layer_decay: float | None = None) -> list[dict]:
        from samadapt.engine.schedule import adamw_param_groups

        if layer_decay is not None:
            raise UserError(f"{flag('layer_decay')} applies to Segment Anything models, not {self.name}")
        return adamw_param_groups(self, lr=lr, weight_decay=weight_decay)
