"""The few-shot segmenter: SAM's mask decoder queried with prototype prompt tokens, one query per class."""

from __future__ import annotations

import torch
from torch import nn

from samadapt.modeling.prototypes import PrototypePrompter, SupportPrototypes

# SAM2 applies these decoder convolutions to the stride-4/8 maps at encode time; the cache holds
# their output, so they must stay frozen or cached features and decoder would disagree.
ENCODE_TIME_DECODER_PARTS = ("conv_s0.", "conv_s1.")


class FewShotSegmenter(nn.Module):
    """Trainable parts (mask decoder + prompter) over a frozen `SegmentAnything`.

    The wrapped model is kept as a plain attribute, not a sub-module, so `state_dict()` (and every
    training checkpoint) holds only what trains: `mask_decoder.*` and `prompter.*`.
    """

    def __init__(self, sam, prompter: PrototypePrompter | None = None):
        super().__init__()
        object.__setattr__(self, "sam", sam)
        self.mask_decoder = sam.mask_decoder
        self.prompter = prompter or PrototypePrompter(sam.feature_dim)
        # Few-shot queries always read mask token 0; SAM2's eval-time switch to another token when the
        # mask looks unstable would make prediction differ from training.
        if hasattr(self.mask_decoder, "dynamic_multimask_via_stability"):
            self.mask_decoder.dynamic_multimask_via_stability = False
        for parameter in sam.parameters():
            parameter.requires_grad_(False)
        for name, parameter in self.named_parameters():
            frozen = any(name.startswith(f"mask_decoder.{part}") for part in ENCODE_TIME_DECODER_PARTS)
            parameter.requires_grad_(not frozen)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, features, prototypes: SupportPrototypes | list[SupportPrototypes]) -> torch.Tensor:
        """Mask logits (B, C, S/4, S/4) for `features` (batch B) and one prototype set, or one per image."""
        batch = features.batch_size
        if isinstance(prototypes, SupportPrototypes):
            tokens = self.prompter(prototypes, batch)
        else:
            tokens = torch.cat([self.prompter(p, 1) for p in prototypes])
        return self.sam.decode(features, prompt_tokens=tokens, multimask=False).logits[:, :, 0]


def labels_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) per-class logits -> (..., H, W) int64 labels: the highest class where its logit
    is positive, else 0 (background)."""
    best, index = logits.max(dim=-3)
    return torch.where(best > 0, index + 1, torch.zeros_like(index))
