"""Load weights exactly: Meta's checkpoint files, Hugging Face directories, samadapt model folders.

Formats are recognised by content, not by file name:
  * Meta SAM2/SAM2.1 `.pt` (a dict with key "model") and Meta SAM `.pth` (a plain state dict);
  * a Hugging Face directory (`config.json` + `model.safetensors`, transformers key names), or a
    bare `.safetensors` file with transformers key names;
  * a samadapt model folder (`model.safetensors` + `samadapt.json`, see `model_folder.py`).

Loading is strict: missing keys, unexpected keys, shape mismatches and checkpoints of another
variant are `UserError`s naming the file. Only parameters known to belong to the video model are
dropped, by explicit name. Pickles are read with `torch.load(weights_only=True)` only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from samadapt.errors import UserError, warn
from samadapt.modeling import meta_sam, meta_sam2
from samadapt.modeling.key_mapping import check_strict
from samadapt.modeling.model_folder import (
    EXTRA_FILE, METADATA_FILE, ModelFolder, read_metadata, read_model_folder_weights, verified_file,
)
from samadapt.modeling.registry import build_model, get_spec
from samadapt.modeling.weight_files import LoadedWeights, read_safetensors, read_torch_file

# transformers' Sam2VideoModel parameters that image segmentation does not use.
HF_VIDEO_ONLY = [
    r"memory_attention\..+",
    r"memory_encoder\..+",
    "memory_temporal_positional_encoding",
    r"mask_downsample\.(weight|bias)",
    r"object_pointer_proj\..+",
    r"temporal_positional_encoding_projection_layer\.(weight|bias)",
    "no_memory_positional_encoding",
    "no_object_pointer",
    "occlusion_spatial_embedding_parameter",
]
_HF_SAM21_MARKERS = ("occlusion_spatial_embedding_parameter", "temporal_positional_encoding_projection_layer.weight")
_POSITIONAL = ("shared_image_embedding.positional_embedding", "prompt_encoder.shared_embedding.positional_embedding")


def _tensor_dict(obj, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) for k in obj):
        raise UserError("not a model checkpoint (expected a dict of named tensors)", path)
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(obj):
        others = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)][:3]
        raise UserError(f"not a state dict: entries {others} are not tensors", path)
    return tensors


def _split_video_only(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(the image model's tensors, the names of the video-only ones) of a transformers-named state dict."""
    video_only = [re.compile(p) for p in HF_VIDEO_ONLY]
    state, unused = {}, []
    for key, value in sd.items():
        if any(p.fullmatch(key) for p in video_only):
            unused.append(key)
        else:
            state[key] = value
    return state, unused


def _from_hf_keys(sd: dict[str, torch.Tensor], path: Path, source_format: str) -> LoadedWeights:
    """A transformers-named state dict: drop known video-only keys, fill in the tied copy."""
    state, unused = _split_video_only(sd)
    for a, b in (_POSITIONAL, _POSITIONAL[::-1]):
        # transformers may save only one of the two tied copies of the Fourier matrix
        if a in state and b not in state:
            state[b] = state[a]
    family = "sam2" if any(k.startswith("vision_encoder.backbone.") for k in state) else "sam"
    return LoadedWeights(state, source_format, path, unused=unused, family=family)


def _variant_from_hf_config(config: dict, state: LoadedWeights, path: Path) -> None:
    from samadapt.modeling.registry import REGISTRY

    vision = config.get("vision_config") or {}
    prompt = config.get("prompt_encoder_config") or {}
    if isinstance(prompt.get("image_size"), int):
        state.image_size = prompt["image_size"]
    if state.family == "sam2":
        backbone = vision.get("backbone_config") or {}
        width, depth = backbone.get("hidden_size", 96), sum(backbone.get("blocks_per_stage") or [1, 2, 7, 2])
        has_markers = any(k in state.unused for k in _HF_SAM21_MARKERS)
        matches = [
            spec.name for spec in REGISTRY.values()
            if spec.family == "sam2" and spec.encoder.embed_dim == width and sum(spec.encoder.stages) == depth
        ]
        if matches:
            if state.unused:  # the video parameters tell SAM2 from SAM2.1
                state.variant = next(n for n in matches if get_spec(n).generation == ("2.1" if has_markers else "2"))
            else:  # image-only weights: the two generations share one architecture
                state.candidates = matches
            return
    else:
        width, depth = vision.get("hidden_size", 768), vision.get("num_hidden_layers", 12)
        for spec in REGISTRY.values():
            if spec.family == "sam" and spec.encoder.embed_dim == width and spec.encoder.depth == depth:
                state.variant = spec.name
                return
    raise UserError(f"config.json describes no known variant (width {width}, {depth} blocks)", path)


def read_weights(path: str | Path) -> LoadedWeights:
    """Read any supported format into transformers key names (no model is built)."""
    path = Path(path)
    if path.is_dir():
        if (path / METADATA_FILE).is_file():
            from samadapt.engine.run_folder import refuse_incomplete

            refuse_incomplete(path, "model folder")
            loaded = read_model_folder_weights(path)
            if read_metadata(path).get("extra_config", {}).get("memory"):
                # a `finetune-memory` run: image models take its image half (its encoder and the
                # decoder it trained), as they take a Meta checkpoint's
                loaded.state_dict, loaded.unused = _split_video_only(loaded.state_dict)
            return loaded
        config_file, weights_file = path / "config.json", path / "model.safetensors"
        if config_file.is_file() and weights_file.is_file():
            try:
                config = json.loads(config_file.read_text())
            except (OSError, ValueError) as exc:
                raise UserError(f"cannot read config.json: {exc}", config_file) from None
            model_type = str(config.get("model_type", ""))
            if model_type not in ("sam2", "sam2_video", "sam"):
                raise UserError(f"config.json model_type {model_type!r} is not sam2/sam2_video/sam", config_file)
            state = _from_hf_keys(read_safetensors(weights_file), weights_file, "huggingface")
            state.family = "sam" if model_type == "sam" else "sam2"
            _variant_from_hf_config(config, state, config_file)
            return state
        raise UserError("folder is neither a samadapt checkpoint (samadapt.json) nor a Hugging Face "
                        "model (config.json + model.safetensors)", path)
    if not path.exists():
        raise UserError("weights file not found", path)
    if path.suffix == ".safetensors":
        return _from_hf_keys(read_safetensors(path), path, "safetensors")
    obj = read_torch_file(path)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # Meta's SAM2 training checkpoints wrap the state dict
    sd = _tensor_dict(obj, path)
    if meta_sam2.looks_like_meta_sam2(sd):
        conv = meta_sam2.convert(sd)
        return LoadedWeights(conv.state_dict, "meta-sam2", path, meta_sam2.detect_variant(sd, path), 1024,
                             conv.unused, conv.unmatched, "sam2")
    if meta_sam.looks_like_meta_sam(sd):
        name, size = meta_sam.detect_variant(sd, path)
        conv = meta_sam.convert(sd)
        return LoadedWeights(conv.state_dict, "meta-sam", path, name, size, conv.unused, conv.unmatched, "sam")
    if any(k.startswith("vision_encoder.") for k in sd):
        return _from_hf_keys(sd, path, "transformers-state-dict")
    raise UserError(f"not a SAM2/SAM checkpoint (first keys: {', '.join(list(sd)[:3])})", path)


def _check_variant(weights: LoadedWeights, name: str) -> None:
    if weights.family is not None and weights.family != get_spec(name).family:
        raise UserError(
            f"checkpoint is a {weights.family.upper()} model ({weights.variant or 'unknown variant'}) "
            f"but the model is {name}", weights.path
        )
    if weights.candidates and name not in weights.candidates:
        raise UserError(f"checkpoint is one of {', '.join(weights.candidates)} but the model is {name}", weights.path)
    if weights.variant is not None and weights.variant != name:
        raise UserError(f"checkpoint is {weights.variant} but the model is {name}", weights.path)


def load_weights(model, path: str | Path, *, weights: LoadedWeights | None = None) -> LoadedWeights:
    """Load `path` into an existing `SegmentAnything` strictly, resizing SAM's position tables
    to `model.image_size`. Returns what was read (for its provenance)."""
    weights = read_weights(path) if weights is None else weights
    _check_variant(weights, model.name)
    target = model.hf.state_dict()
    state = weights.state_dict
    if model.family == "sam":
        state = meta_sam.resize_for_image_size(state, target)
    check_strict(state, target, weights.path, extra_unexpected=weights.unmatched, what=model.name)
    model.hf.load_state_dict(state, strict=True)
    return weights


def load_model(name: str | None = None, weights: str | Path | None = None, image_size: int | None = None):
    """A `SegmentAnything` for `name`, with `weights` from any supported format.

    Args:
        name: registry name; optional when `weights` identify the variant (then, if given, it
            must agree with the checkpoint).
        weights: file or folder; None gives random weights.
        image_size: input size S; default the checkpoint's own size (1024 for Meta's files).
    """
    if weights is None:
        if name is None:
            raise UserError("give a model name or a weights path")
        return build_model(name, image_size)
    loaded = read_weights(weights)
    if name is not None:
        name = get_spec(name).name
        _check_variant(loaded, name)
    elif loaded.variant is not None:
        name = loaded.variant
    elif loaded.candidates:
        # Image-only weights: SAM2 and SAM2.1 share the architecture, so either loads; the newer is
        # the likelier, but the choice changes the registry name recorded with every result.
        name = loaded.candidates[-1]
        warn(f"{weights}: these weights fit {' and '.join(loaded.candidates)} alike; using {name} "
             "(pass the model name to choose)")
    else:
        raise UserError("cannot tell which model these weights belong to; pass the model name", weights)
    size = image_size or loaded.image_size or get_spec(name).default_image_size
    model = build_model(name, size)
    load_weights(model, weights, weights=loaded)
    return model


def load_model_folder(directory: str | Path, image_size: int | None = None) -> ModelFolder:
    """Rebuild the model saved in a samadapt model folder (at its saved size unless `image_size` is
    given), verify hashes, and return it with its metadata and extra tensors. A folder whose run is
    marked incomplete (`engine.run_folder`) is refused."""
    from samadapt.engine.run_folder import refuse_incomplete

    directory = Path(directory)
    refuse_incomplete(directory, "model folder")
    weights = read_model_folder_weights(directory)
    meta = read_metadata(directory)
    model = build_model(meta["model"], image_size or int(meta["image_size"]))
    load_weights(model, directory, weights=weights)
    extra = {}
    if EXTRA_FILE in meta["files"]:
        extra = read_safetensors(verified_file(directory, meta, EXTRA_FILE))
    return ModelFolder(model, meta, extra)
