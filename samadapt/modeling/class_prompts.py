"""Prompt-free multi-class segmentation with Segment Anything: one learned prompt per class.

SAM's mask decoder turns a set of sparse prompt tokens (normally the embeddings of clicks and boxes)
into a mask. `ClassPromptSegmenter` keeps a learned tensor `class_prompts` of shape (C, T, 256): T
tokens for each of the C foreground classes. For a batch of B images it feeds them to the decoder as
`prompt_tokens` of shape (B, C, T, 256), i.e. C queries per image, so one decoder pass gives one mask
per class: logits (B, C, S/4, S/4). Binary segmentation is C = 1. Optional simulated boxes or points
(see `samadapt/finetune/prompts.py`) are placed beside the class tokens of the matching query for interactive use.

What trains is chosen with `configure_trainable`:
    all              every parameter
    decoder          class prompts + mask decoder (SAM2's `conv_s0`/`conv_s1` included)
    encoder-decoder  everything except the trunk's first `freeze_stages` stages (and its patch and
                     position embeddings once any stage is frozen); the prompt encoder stays frozen
                     because the learned tokens replace it
    lora             class prompts + the LoRA adapters added by `modeling.lora.add_lora` + the mask
                     decoder; when the decoder's transformer has adapters, its own weights stay frozen
                     and only its output head (mask tokens, upscaling, hypernetworks, score heads) trains
`param_groups` gives AdamW groups with a separate encoder learning rate and optional layer-wise decay.

Presence gate (`presence=True`, SAM2 only): SAM2's decoder also predicts an object-presence logit per
query. Trained on "does the image contain this class at all", it lets the model return an empty mask
for an absent class instead of a few stray pixels: an image with no lesion then scores Dice 1, not 0.
In eval mode the logits of a class judged absent are pushed below 0 everywhere; in train mode
`forward(..., return_presence=True)` hands the presence logits to the loss.
"""

from __future__ import annotations

import torch
from torch import nn

from samadapt.errors import UserError
from samadapt.options import flag

TRAIN_MODES = ("all", "decoder", "encoder-decoder", "lora")
ENCODER_PREFIX = "base.hf.vision_encoder."
DEFAULT_TOKENS_PER_CLASS = 4


class ClassPromptSegmenter(nn.Module):
    """A `SegmentAnything` model plus learned class prompts (C, T, 256).

    Attributes:
        base: the wrapped `samadapt.modeling.segment_anything.SegmentAnything`.
        class_names: the C foreground classes in output order (label 1..C of index masks).
        class_prompts: nn.Parameter (C, T, 256).
    """

    kind = "sam"

    def __init__(self, base, class_names: list[str], tokens_per_class: int = DEFAULT_TOKENS_PER_CLASS,
                 init_std: float = 1.0, presence: bool = False):
        super().__init__()
        if not class_names:
            raise UserError("a segmentation model needs at least one foreground class")
        if presence and base.family != "sam2":
            raise UserError(f"the presence gate needs SAM2's object-score head; {base.name} has none")
        self.presence = presence
        if tokens_per_class < 1:
            raise UserError(f"tokens per class must be >= 1, got {tokens_per_class}")
        self.base = base
        self.class_names = list(class_names)
        # Unit scale, like the Fourier position features that make up SAM's own point and box tokens:
        # near-zero prompts look alike to the decoder, and classes then separate very slowly.
        self.class_prompts = nn.Parameter(torch.randn(len(class_names), tokens_per_class, base.feature_dim) * init_std)
        # SAM2's decoder, in eval mode, may swap its single mask for one of the multi-mask outputs when
        # the single one looks unstable. Class prompts are trained against the single output only, so
        # the swap would put an untrained output into predictions.
        if hasattr(base.mask_decoder, "dynamic_multimask_via_stability"):
            base.mask_decoder.dynamic_multimask_via_stability = False

    @property
    def image_size(self) -> int:
        return self.base.image_size

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def forward(self, pixel_values: torch.Tensor, boxes: torch.Tensor | None = None,
                points: torch.Tensor | None = None, point_labels: torch.Tensor | None = None,
                return_presence: bool = False):
        """Mask logits (B, C, S/4, S/4) for pixel values (B, 3, S, S).

        boxes: optional (B, C, 4) model-pixel boxes, one per class query; points/point_labels:
        optional (B, C, N, 2) / (B, C, N) (label -1 pads queries with fewer points).
        return_presence: also return the presence logits (B, C) (None without the gate), ungated
        mask logits, for training.
        """
        return self.decode_classes(self.base.encode(pixel_values), boxes, points, point_labels, return_presence)

    def decode_classes(self, features, boxes: torch.Tensor | None = None, points: torch.Tensor | None = None,
                       point_labels: torch.Tensor | None = None, return_presence: bool = False):
        """`forward`'s decoder half, on `ImageFeatures` from any encoder path (fast, onnxruntime)."""
        batch = features.embedding.shape[0]
        tokens = self.class_prompts.unsqueeze(0).expand(batch, -1, -1, -1)
        out = self.base.decode(features, prompt_tokens=tokens, boxes=boxes, points=points,
                               point_labels=point_labels, multimask=False)
        logits = out.logits[:, :, 0]
        presence = out.object_score[..., 0] if self.presence else None
        if return_presence:
            return logits, presence
        if presence is not None and not self.training:
            logits = gate_absent(logits, presence)
        return logits

    # ----- which parameters train -----------------------------------------------------------------
    def trunk_stage_of_block(self) -> list[int]:
        """Stage number (0-based) of each trunk block. Hiera: its 4 stages. SAM's ViT has no stages,
        so its blocks are grouped at the global-attention blocks (4 groups for every SAM size)."""
        config = self.base.hf.config.vision_config
        if self.base.family == "sam2":
            counts = list(config.backbone_config.blocks_per_stage)
            return [stage for stage, count in enumerate(counts) for _ in range(count)]
        boundaries = sorted(config.global_attn_indexes)
        return [sum(block > b for b in boundaries) for block in range(config.num_hidden_layers)]

    def _trunk_blocks(self) -> nn.ModuleList:
        return self.base.trunk.blocks if self.base.family == "sam2" else self.base.hf.vision_encoder.layers

    def configure_trainable(self, mode: str, freeze_stages: int = 0) -> dict[str, int]:
        """Set `requires_grad` for `mode` (see module doc); returns trainable/frozen parameter counts."""
        if mode not in TRAIN_MODES:
            raise UserError(f"{flag('train')} must be one of {', '.join(TRAIN_MODES)}, got {mode!r}")
        stages = self.trunk_stage_of_block()
        n_stages = max(stages) + 1
        if not 0 <= freeze_stages <= n_stages:
            raise UserError(f"{flag('freeze_stages')} {freeze_stages}: {self.base.name} has {n_stages} trunk stages")
        if freeze_stages and mode != "encoder-decoder":
            raise UserError(f"{flag('freeze_stages')} applies only to {flag('train')} encoder-decoder")
        for param in self.parameters():
            param.requires_grad = mode == "all"
        if mode == "lora":
            self._train_lora()
        elif mode == "decoder":
            self.class_prompts.requires_grad = True
            for param in self.base.mask_decoder.parameters():
                param.requires_grad = True
        elif mode == "encoder-decoder":
            for param in self.parameters():
                param.requires_grad = True
            for param in self.base.prompt_encoder.parameters():
                param.requires_grad = False
            if freeze_stages:
                for block, stage in zip(self._trunk_blocks(), stages):
                    if stage < freeze_stages:
                        for param in block.parameters():
                            param.requires_grad = False
                for name, param in self.base.trunk.named_parameters():
                    if name.startswith(("patch_embed", "pos_embed")):
                        param.requires_grad = False
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"trainable": trainable, "frozen": sum(p.numel() for p in self.parameters()) - trainable}

    def _train_lora(self) -> None:
        from samadapt.modeling.lora import has_lora, is_lora_parameter, wraps_decoder

        if not has_lora(self.base.hf):
            raise UserError(f"{flag('train')} lora: the model has no LoRA adapters (modeling.lora.add_lora)")
        frozen_decoder_part = "transformer." if wraps_decoder(self.base.hf) else None
        self.class_prompts.requires_grad = True
        for name, param in self.base.hf.named_parameters():
            param.requires_grad = is_lora_parameter(name)
        for name, param in self.base.mask_decoder.named_parameters():
            if frozen_decoder_part is None or not name.startswith(frozen_decoder_part):
                param.requires_grad = True  # inside the wrapped transformer, only its adapters train

    def layer_id(self, name: str) -> int:
        """Depth of a parameter for layer-wise lr decay: embeddings 0, trunk block i -> i + 1, the
        neck next, then everything after the encoder (decoder, prompts) at the top."""
        n_blocks = len(self._trunk_blocks())
        if not name.startswith(ENCODER_PREFIX):
            return n_blocks + 2
        rest = name[len(ENCODER_PREFIX):]
        for marker in ("backbone.blocks.", "layers."):
            if rest.startswith(marker):
                return int(rest[len(marker):].split(".")[0]) + 1
        if rest.startswith("neck."):
            return n_blocks + 1
        return 0

    def param_groups(self, lr: float, encoder_lr: float | None, weight_decay: float,
                     layer_decay: float | None = None) -> list[dict]:
        """AdamW groups: the image encoder at `encoder_lr` (default `lr`), the rest at `lr`."""
        from samadapt.engine.schedule import adamw_param_groups

        group_lrs = {ENCODER_PREFIX: encoder_lr} if encoder_lr is not None else None
        return adamw_param_groups(self, lr=lr, weight_decay=weight_decay, group_lrs=group_lrs,
                                  layer_id=self.layer_id if layer_decay is not None else None,
                                  layer_decay=layer_decay, no_decay_name_parts=("class_prompts",))


def gate_absent(logits: torch.Tensor, presence: torch.Tensor, margin: float = 10.0) -> torch.Tensor:
    """(B, C, h, w) mask logits, (B, C) presence logits -> logits with every pixel of an absent class
    (presence < 0) at most -margin, so no threshold above -margin marks it; present classes untouched."""
    absent = (presence < 0)[..., None, None]
    return torch.where(absent, torch.minimum(logits, logits.new_tensor(-margin)), logits)


def presence_targets(target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """(B, C, H, W) float targets (+ (B, H, W) valid) -> (B, C) 1 where the class has any valid pixel."""
    if valid is not None:
        target = target * valid.unsqueeze(1).to(target.dtype)
    return (target.flatten(2).amax(dim=2) > 0).to(target.dtype)


def one_hot_targets(mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Index mask (B, H, W) with labels 0..C -> float multi-label target (B, C, H, W), background dropped."""
    labels = torch.arange(1, num_classes + 1, device=mask.device).view(1, -1, 1, 1)
    return (mask.unsqueeze(1) == labels).float()


def logits_to_index(logits: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) sigmoid logits -> (B, H, W) int64 index mask: the most confident class among those
    above 0.5, background where none is."""
    best = logits.argmax(dim=1) + 1
    return torch.where((logits > 0).any(dim=1), best, torch.zeros_like(best))
