"""SAM2 whole: the image model plus its streaming memory, as transformers' `Sam2VideoModel`.

The memory half is what lets SAM2 follow an object from frame to frame (here: slice to slice):
memory attention conditions each frame's features on the encoded masks of a fixed number of
earlier frames (`num_maskmem`, 7 in every release) and on object pointers; the memory encoder turns
each predicted mask into such a memory. The image half is the same network `SegmentAnything` wraps.

Loading is strict like `loading.load_model`: Meta's `.pt` (SAM2 and SAM2.1, every size), Hugging
Face `sam2_video` folders and samadapt folders or safetensors files that carry the memory weights.
Weights without the memory half (SAM v1, image-only exports, samadapt folders saved from the image
model) are refused by name: propagation would otherwise run on random memory modules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from samadapt.errors import UserError
from samadapt.modeling import meta_sam, meta_sam2
from samadapt.modeling.key_mapping import check_strict
from samadapt.modeling.model_folder import METADATA_FILE
from samadapt.modeling.registry import get_spec
from samadapt.modeling.weight_files import read_safetensors, read_torch_file

_MEMORY_PREFIXES = ("memory_attention.", "memory_encoder.")
_POSITIONAL = ("shared_image_embedding.positional_embedding", "prompt_encoder.shared_embedding.positional_embedding")
NO_MEMORY = ("has no memory weights (memory_attention, memory_encoder, object pointers); propagation needs "
             "a whole SAM2 video checkpoint: Meta's sam2*_hiera_*.pt or a Hugging Face sam2_video folder")


@dataclass
class MemoryModel:
    """A `Sam2VideoModel` with the registry name and input size it was built for."""

    hf: torch.nn.Module
    name: str
    image_size: int


def video_config(name: str, image_size: int | None = None):
    """`Sam2VideoConfig` for the SAM2 variant `name` at `image_size` (default 1024)."""
    from transformers import Sam2VideoConfig

    spec = get_spec(name)
    if spec.family != "sam2":
        raise UserError(f"{spec.name} has no memory: propagation needs a SAM2 or SAM2.1 model")
    size = spec.check_image_size(spec.default_image_size if image_size is None else image_size)
    image = spec.hf_config(size)
    sam21 = spec.generation == "2.1"
    side = size // 16
    return Sam2VideoConfig(
        vision_config=image.vision_config.to_dict(),
        prompt_encoder_config=image.prompt_encoder_config.to_dict(),
        mask_decoder_config=image.mask_decoder_config.to_dict(),
        image_size=size,
        # Meta's RoPE memory attention recomputes its table for the actual feature map (S/16).
        memory_attention_rope_feat_sizes=[side, side],
        # the two SAM2.1 additions: an embedding for "object absent" memories, projected
        # temporal encodings of object pointers
        enable_occlusion_spatial_embedding=sam21,
        enable_temporal_pos_encoding_for_object_pointers=sam21,
    )


def build_memory_model(name: str, image_size: int | None = None) -> MemoryModel:
    """A random-initialised `MemoryModel` for `name`, in eval mode on the CPU."""
    from transformers import Sam2VideoModel

    config = video_config(name, image_size)
    return MemoryModel(Sam2VideoModel(config).eval(), get_spec(name).name, config.image_size)


@dataclass
class VideoWeights:
    """A whole video state dict in transformers' names, and what the file says about itself."""

    state_dict: dict[str, torch.Tensor]
    path: Path
    variant: str | None = None
    candidates: tuple[str, ...] = ()
    image_size: int | None = None
    unmatched: tuple[str, ...] = ()


def _from_meta(path: Path) -> VideoWeights:
    obj = read_torch_file(path)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError("not a model checkpoint (expected a dict of named tensors)", path)
    if meta_sam.looks_like_meta_sam(obj):
        raise UserError(f"a SAM (v1) checkpoint {NO_MEMORY}", path)
    if not meta_sam2.looks_like_meta_sam2(obj):
        raise UserError(f"not a SAM2 checkpoint (first keys: {', '.join(list(obj)[:3])})", path)
    if not meta_sam2.has_memory(obj):
        raise UserError(f"checkpoint {NO_MEMORY}", path)
    converted = meta_sam2.convert_video(obj)
    return VideoWeights(converted.state_dict, path, meta_sam2.detect_variant(obj, path), image_size=1024,
                        unmatched=tuple(converted.unmatched))


def _transformers_file(path: Path) -> Path:
    """The safetensors file holding the whole state dict of a folder or file in transformers' names."""
    if path.is_dir():
        if (path / METADATA_FILE).is_file():
            return path / "model.safetensors"
        config = path / "config.json"
        if config.is_file():
            try:
                model_type = str(json.loads(config.read_text()).get("model_type", ""))
            except (OSError, ValueError) as exc:
                raise UserError(f"cannot read config.json: {exc}", config) from None
            if model_type != "sam2_video":
                raise UserError(f"config.json model_type {model_type!r} {NO_MEMORY}", config)
        return path / "model.safetensors"
    return path


def read_video_weights(path: str | Path) -> VideoWeights:
    """Read any supported format into `Sam2VideoModel` key names; refuse weights without memory."""
    from samadapt.modeling.loading import read_weights

    path = Path(path)
    if not path.exists():
        raise UserError("weights file not found", path)
    if path.is_file() and path.suffix != ".safetensors":
        return _from_meta(path)
    identity = read_weights(path)  # variant, size and hash checks of the image half
    if identity.family != "sam2" and identity.family is not None:
        raise UserError(f"a SAM (v1) model {NO_MEMORY}", path)
    tensors_file = _transformers_file(path)
    state = dict(read_safetensors(tensors_file))
    if not any(k.startswith(_MEMORY_PREFIXES) for k in state):
        raise UserError(f"model {NO_MEMORY}", path)
    for a, b in (_POSITIONAL, _POSITIONAL[::-1]):  # transformers may save one of the two tied copies
        if a in state and b not in state:
            state[b] = state[a]
    return VideoWeights(state, path, identity.variant, tuple(identity.candidates), identity.image_size)


def _pick_name(weights: VideoWeights, name: str | None) -> str:
    if name is not None:
        name = get_spec(name).name
        known = weights.variant or (weights.candidates[-1] if weights.candidates else None)
        if (weights.variant and weights.variant != name) or (weights.candidates and name not in weights.candidates):
            raise UserError(f"checkpoint is {known} but the model is {name}", weights.path)
        return name
    if weights.variant:
        return weights.variant
    if weights.candidates:
        return weights.candidates[-1]
    raise UserError("cannot tell which model these weights belong to; pass the model name", weights.path)


def load_memory_model(name: str | None = None, weights: str | Path | None = None,
                      image_size: int | None = None) -> MemoryModel:
    """A `MemoryModel` for `name` with `weights` loaded strictly (every key used, none missing);
    `weights=None` gives random weights. `image_size` defaults to the checkpoint's own size."""
    if weights is None:
        if name is None:
            raise UserError("give a model name or a weights path")
        return build_memory_model(name, image_size)
    loaded = read_video_weights(weights)
    name = _pick_name(loaded, name)
    model = build_memory_model(name, image_size or loaded.image_size)
    target = model.hf.state_dict()
    check_strict(loaded.state_dict, target, loaded.path, extra_unexpected=list(loaded.unmatched),
                 what=f"{name} with memory")
    model.hf.load_state_dict(loaded.state_dict, strict=True)
    return model


def accelerate_memory_model(model: MemoryModel, *, fast: bool = True, compile: bool = False,
                            precision: str = "fp32") -> MemoryModel:
    """Route the video model's image features through samadapt's fast Hiera encoder (in place).

    The fast encoder works on the same parameters (`vision_encoder`, `conv_s0`/`conv_s1`), returns
    the image path's features (`no_memory_embedding` added, which the memory path adds itself only
    where SAM2 does, so it is taken off again) and leaves the memory modules as they are. Models
    the fast path does not cover keep the plain encoder (with the fast encoder's one-line notice).
    """
    from types import SimpleNamespace

    from samadapt.modeling.fast import accelerate
    from samadapt.modeling.segment_anything import SegmentAnything

    if not fast:
        return model
    hf = model.hf
    image = accelerate(SegmentAnything(hf, name=model.name, family="sam2", image_size=model.image_size).eval(),
                       compile=compile, precision=precision)
    if "fast_encoder" not in image.__dict__:
        return model
    neck = hf.vision_encoder.neck
    channels = neck.convs[0].out_channels

    def image_features(pixel_values: torch.Tensor, **_):
        features = image.encode(pixel_values)
        s4, s8 = features.high_res  # (B, 32, S/4, S/4), (B, 64, S/8, S/8)
        s16 = features.embedding - hf.no_memory_embedding.reshape(1, -1, 1, 1)  # (B, 256, S/16, S/16)
        maps = [s4, s8, s16]
        positions = [neck.position_encoding((m.shape[0], channels, *m.shape[-2:]), m.device, m.dtype) for m in maps]
        # the video model's layout: (H*W, B, C) per level, high to low resolution
        return SimpleNamespace(fpn_hidden_states=[m.flatten(2).permute(2, 0, 1) for m in maps],
                               fpn_position_encoding=[p.flatten(2).permute(2, 0, 1) for p in positions])

    hf.__dict__["get_image_features"] = image_features  # shadows the method; state_dict unaffected
    return model
