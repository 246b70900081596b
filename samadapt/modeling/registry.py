"""Named SAM2 / SAM variants and how to build each one, at any input size, with random weights.

Every variant is described once by a `ModelSpec` holding the architecture numbers of Meta's
released configurations (`sam2/configs/sam2*/sam2*_hiera_*.yaml` for SAM2 and SAM2.1,
`segment_anything/build_sam.py` for SAM). The transformers configuration is derived from the spec
for a requested image size, so feature-map sizes, the prompt encoder's geometry and SAM's absolute
position embedding all follow the input size instead of assuming 1024 px.

SAM2 and SAM2.1 share the image-segmentation architecture exactly; they differ in their trained
weights and in a few video-only parameters that SAM2.1 checkpoints carry (`no_obj_embed_spatial`,
`obj_ptr_tpos_proj`). They are separate names because their checkpoints are not interchangeable.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from samadapt.errors import UserError

DEFAULT_IMAGE_SIZE = 1024
# Input size of the training commands and of the few-shot feature cache: a quarter of the pixels
# of Meta's 1024, so a CPU step stays affordable, and one number so that a cache, the run trained
# on it and its predictions agree without flags.
TRAINING_IMAGE_SIZE = 512
# A small but real configuration for tests and quick experiments: Hiera-T at 256 px.
TEST_MODEL = "sam2-hiera-tiny"
TEST_IMAGE_SIZE = 256


@dataclass(frozen=True)
class HieraSpec:
    """SAM2's Hiera trunk: stage widths/heads double at each of the 3 pooling steps."""

    embed_dim: int
    num_heads: int
    stages: tuple[int, ...]
    global_att_blocks: tuple[int, ...]
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    bkg_pos_embed_size: tuple[int, int] = (7, 7)

    @property
    def widths(self) -> list[int]:
        return [self.embed_dim * 2**i for i in range(len(self.stages))]

    @property
    def heads(self) -> list[int]:
        return [self.num_heads * 2**i for i in range(len(self.stages))]


@dataclass(frozen=True)
class ViTSpec:
    """SAM's plain ViT image encoder (patch 16, windowed attention with a few global blocks)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    patch_size: int = 16


@dataclass(frozen=True)
class ModelSpec:
    """One named variant.

    `meta_checkpoint` is the file name of Meta's release, `hf_repo` the Hugging Face repository
    with the same weights in transformers' layout (informational; nothing is downloaded).
    """

    name: str
    family: str  # "sam2" (SAM2 and SAM2.1) or "sam"
    encoder: HieraSpec | ViTSpec
    meta_checkpoint: str
    hf_repo: str
    generation: str = ""  # "2" or "2.1" for the sam2 family
    default_image_size: int = DEFAULT_IMAGE_SIZE
    aliases: tuple[str, ...] = field(default=())

    @property
    def size_multiple(self) -> int:
        """Input sizes must be multiples of this: Hiera pools 3 times after a stride-4 stem (32);
        SAM's ViT has 16-px patches."""
        return 32 if self.family == "sam2" else 16

    def check_image_size(self, image_size: int) -> int:
        if isinstance(image_size, bool) or not isinstance(image_size, int):
            raise UserError(f"image size must be an integer, got {image_size!r} (model {self.name})")
        step = self.size_multiple
        if image_size < 2 * step or image_size % step:
            raise UserError(
                f"image size {image_size} does not suit {self.name}: use a multiple of {step} "
                f"(at least {2 * step}), e.g. 256, 512 or 1024"
            )
        return image_size

    def hf_config(self, image_size: int | None = None):
        """The transformers config (`Sam2Config` or `SamConfig`) for this variant at `image_size`."""
        size = self.check_image_size(self.default_image_size if image_size is None else image_size)
        if self.family == "sam2":
            return _sam2_config(self.encoder, size)
        return _sam_config(self.encoder, size)


def _sam2_config(spec: HieraSpec, size: int):
    from transformers import (
        Sam2Config,
        Sam2HieraDetConfig,
        Sam2MaskDecoderConfig,
        Sam2PromptEncoderConfig,
        Sam2VisionConfig,
    )

    backbone = Sam2HieraDetConfig(
        hidden_size=spec.embed_dim,
        num_attention_heads=spec.num_heads,
        image_size=[size, size],
        blocks_per_stage=list(spec.stages),
        embed_dim_per_stage=spec.widths,
        num_attention_heads_per_stage=spec.heads,
        window_size_per_stage=list(spec.window_spec),
        global_attention_blocks=list(spec.global_att_blocks),
        window_positional_embedding_background_size=list(spec.bkg_pos_embed_size),
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=spec.widths[::-1],
        # strides 4, 8, 16: the three levels the mask decoder consumes
        backbone_feature_sizes=[[size // 4, size // 4], [size // 8, size // 8], [size // 16, size // 16]],
    )
    return Sam2Config(
        vision_config=vision,
        prompt_encoder_config=Sam2PromptEncoderConfig(image_size=size),
        mask_decoder_config=Sam2MaskDecoderConfig(),
    )


def _sam_config(spec: ViTSpec, size: int):
    from transformers import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

    vision = SamVisionConfig(
        hidden_size=spec.embed_dim,
        num_hidden_layers=spec.depth,
        num_attention_heads=spec.num_heads,
        global_attn_indexes=list(spec.global_attn_indexes),
        window_size=spec.window_size,
        image_size=size,
        patch_size=spec.patch_size,
    )
    return SamConfig(
        vision_config=vision,
        prompt_encoder_config=SamPromptEncoderConfig(image_size=size, patch_size=spec.patch_size),
        # Meta's two-way transformer uses torch's default LayerNorm eps (1e-5); transformers'
        # default (1e-6) shifts SAM's masks by ~1e-4 relative error.
        mask_decoder_config=SamMaskDecoderConfig(layer_norm_eps=1e-5),
    )


_HIERA = {
    "tiny": HieraSpec(96, 1, (1, 2, 7, 2), (5, 7, 9)),
    "small": HieraSpec(96, 1, (1, 2, 11, 2), (7, 10, 13)),
    "base-plus": HieraSpec(112, 2, (2, 3, 16, 3), (12, 16, 20), bkg_pos_embed_size=(14, 14)),
    "large": HieraSpec(144, 2, (2, 6, 36, 4), (23, 33, 43), window_spec=(8, 4, 16, 8)),
}
_VIT = {
    "base": (ViTSpec(768, 12, 12, (2, 5, 8, 11)), "sam_vit_b_01ec64.pth", "vit_b"),
    "large": (ViTSpec(1024, 24, 16, (5, 11, 17, 23)), "sam_vit_l_0b3195.pth", "vit_l"),
    "huge": (ViTSpec(1280, 32, 16, (7, 15, 23, 31)), "sam_vit_h_4b8939.pth", "vit_h"),
}


def _build_registry() -> dict[str, ModelSpec]:
    specs: dict[str, ModelSpec] = {}
    for gen in ("2", "2.1"):
        for size, hiera in _HIERA.items():
            name = f"sam{gen}-hiera-{size}"
            meta_file = f"sam{gen}_hiera_{size.replace('-', '_')}.pt"
            specs[name] = ModelSpec(
                name, "sam2", hiera, meta_file, f"facebook/{name}", generation=gen,
                aliases=(meta_file.removesuffix(".pt"),),
            )
    for size, (vit, meta_file, short) in _VIT.items():
        name = f"sam-vit-{size}"
        specs[name] = ModelSpec(name, "sam", vit, meta_file, f"facebook/{name}", aliases=(short,))
    return specs


REGISTRY: dict[str, ModelSpec] = _build_registry()


def list_models(family: str | None = None) -> list[str]:
    """Names of all variants, optionally only of one family ("sam2" or "sam")."""
    return [n for n, s in REGISTRY.items() if family is None or s.family == family]


def get_spec(name: str) -> ModelSpec:
    """The `ModelSpec` for `name` (also accepts Meta's short names like `sam2.1_hiera_tiny`, `vit_b`).

    Raises `UserError` naming close matches for an unknown name.
    """
    key = str(name).strip()
    if key in REGISTRY:
        return REGISTRY[key]
    for spec in REGISTRY.values():
        if key in spec.aliases or key == spec.hf_repo:
            return spec
    close = difflib.get_close_matches(key.lower(), list(REGISTRY), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"known models: {', '.join(REGISTRY)}"
    raise UserError(f"unknown model {key!r}; {hint}")


def build_hf_model(name: str, image_size: int | None = None):
    """A random-initialised transformers `Sam2Model` / `SamModel` for `name` at `image_size`."""
    spec = get_spec(name)
    config = spec.hf_config(image_size)
    if spec.family == "sam2":
        from transformers import Sam2Model

        return Sam2Model(config)
    from transformers import SamModel

    return SamModel(config)


def build_model(name: str, image_size: int | None = None):
    """A random-initialised `SegmentAnything` wrapper for `name` at `image_size` (default 1024).

    Returns:
        `samadapt.modeling.segment_anything.SegmentAnything` in eval mode on the CPU.
    """
    from samadapt.modeling.segment_anything import SegmentAnything

    spec = get_spec(name)
    size = spec.default_image_size if image_size is None else image_size
    hf = build_hf_model(spec.name, size)
    return SegmentAnything(hf, name=spec.name, family=spec.family, image_size=size).eval()
