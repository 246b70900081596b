"""LoRA adapters (peft) on Segment Anything's image encoder, and optionally its mask decoder.

`add_lora(base, settings)` wraps chosen linear layers of the encoder's trunk blocks with peft's LoRA
layers: y = W x + (alpha / r) B A x, with A (r, in) random and B (out, r) zero, so the wrapped model
starts as exactly the pre-trained one and only the low-rank A, B train. `--lora-targets` names the
layers by role:

    qkv    the attention's fused query/key/value projection  (Hiera and ViT: attn.qkv)
    proj   the attention's output projection                 (attn.proj)
    mlp    both MLP layers                                   (Hiera: mlp.proj_in/out; ViT: mlp.lin1/2)

Any other word is taken as the ending of a trunk module name (e.g. `proj_in`), and must match a
linear layer. With `decoder=True` the linear layers of the mask decoder's two-way transformer get
adapters too (its own weights then stay frozen; the output head still trains fully, see
`ClassPromptSegmenter.configure_trainable("lora")`).

A model with adapters keeps peft's module names (`...qkv.base_layer.weight`, `...qkv.lora_A...`);
`merged_copy` folds B A into W and gives back a plain `SegmentAnything` with transformers' own
names, which is what a run's model folder holds, so every reader of a run loads it unchanged.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn

from samadapt.errors import UserError
from samadapt.options import flag

TARGET_ROLES = {
    "qkv": ("attn.qkv",),
    "proj": ("attn.proj",),
    "mlp": ("mlp.proj_in", "mlp.proj_out", "mlp.lin1", "mlp.lin2"),
}
DEFAULT_TARGETS = "qkv,proj,mlp"
TRUNK_PREFIXES = {"sam2": "vision_encoder.backbone.blocks.", "sam": "vision_encoder.layers."}
DECODER_TRANSFORMER = "mask_decoder.transformer."
ADAPTER_NAME = "default"


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("qkv", "proj", "mlp")
    decoder: bool = False

    def as_dict(self) -> dict:
        return {**asdict(self), "targets": list(self.targets)}


def parse_targets(text: str) -> tuple[str, ...]:
    """'qkv,proj' -> ('qkv', 'proj'); empty words are refused."""
    words = tuple(word.strip() for word in str(text).split(","))
    if not words or any(not word for word in words):
        raise UserError(f"{flag('lora_targets')} {text!r}: give comma-separated targets, e.g. {DEFAULT_TARGETS}")
    return words


def _linear_names(hf: nn.Module, prefix: str) -> list[str]:
    return [name for name, module in hf.named_modules() if name.startswith(prefix) and isinstance(module, nn.Linear)]


def target_module_names(hf: nn.Module, family: str, settings: LoraSettings) -> list[str]:
    """Names (in `hf`, a transformers Sam2Model/SamModel) of the linear layers that get adapters;
    a target that matches none is refused, naming it."""
    trunk = _linear_names(hf, TRUNK_PREFIXES[family])
    chosen: list[str] = []
    for word in settings.targets:
        endings = TARGET_ROLES.get(word, (word,))
        matched = [name for name in trunk if name.endswith(tuple("." + e for e in endings))]
        if not matched:
            raise UserError(f"{flag('lora_targets')} {word!r} matches no linear layer of the encoder's trunk "
                            f"(roles: {', '.join(TARGET_ROLES)}, or the end of a module name such as proj_in)")
        chosen += [name for name in matched if name not in chosen]
    if settings.decoder:
        chosen += _linear_names(hf, DECODER_TRANSFORMER)
    return chosen


def add_lora(base, settings: LoraSettings) -> int:
    """Wrap the target layers of `base` (a `SegmentAnything`) with LoRA in place; returns the number
    of adapter parameters. Seeded by the caller (A is random)."""
    from samadapt.errors import require_module

    peft = require_module("peft", "lora", f"{flag('train')} lora")
    if settings.rank < 1:
        raise UserError(f"{flag('lora_rank')} {settings.rank}: must be at least 1")
    names = target_module_names(base.hf, base.family, settings)
    config = peft.LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=0.0, bias="none",
                        target_modules=names)
    peft.inject_adapter_in_model(config, base.hf, adapter_name=ADAPTER_NAME)
    return sum(p.numel() for n, p in base.hf.named_parameters() if is_lora_parameter(n))


def is_lora_parameter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def lora_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # without peft no model can carry adapters
        return []
    return [(name, m) for name, m in module.named_modules() if isinstance(m, LoraLayer)]


def has_lora(module: nn.Module) -> bool:
    return bool(lora_layers(module))


def wraps_decoder(module: nn.Module) -> bool:
    """Whether any mask-decoder layer of `module` (a model holding `hf`) carries an adapter."""
    return any(".mask_decoder." in f".{name}" for name, _ in lora_layers(module))


@torch.no_grad()
def merged_copy(base):
    """A copy of `base` with every adapter folded into its layer's weight (W + alpha/r B A) and the
    plain transformers layer put back, so its state dict has the original names; `base` is untouched."""
    merged = copy.deepcopy(base)
    for name, layer in lora_layers(merged.hf):
        layer.merge(adapter_names=[ADAPTER_NAME])
        parent_name, _, child = name.rpartition(".")
        parent = merged.hf.get_submodule(parent_name) if parent_name else merged.hf
        setattr(parent, child, layer.get_base_layer())
    return merged


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train (adapters, class prompts, decoder parts), detached, on the CPU: the
    adapter-only weights of a run."""
    return {name: p.detach().cpu().contiguous().clone() for name, p in model.named_parameters() if p.requires_grad}
