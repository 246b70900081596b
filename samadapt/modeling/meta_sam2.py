"""Meta's SAM2 / SAM2.1 checkpoints (`sam2_hiera_*.pt`, `sam2.1_hiera_*.pt`) -> transformers names.

Meta stores `{"model": state_dict}` for the whole video model. Image segmentation (`convert`,
into `Sam2Model`) uses the image encoder, prompt encoder, mask decoder and `no_mem_embed`; the
memory modules and object-pointer heads are recognised by name and dropped. `convert_video` (into
`Sam2VideoModel`) renames those too (`MEMORY_RULES`) and drops nothing. SAM2.1 adds two video-only
parameters (`no_obj_embed_spatial`, `obj_ptr_tpos_proj`), which is how the two generations are
told apart.

Hiera's position embedding is a small background grid that the architecture interpolates to the
feature size on every call, so a SAM2 checkpoint needs no resizing for another input size.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from samadapt.errors import UserError
from samadapt.modeling.key_mapping import Converted, mlp_rules, prompt_encoder_rules, rename_keys

_TRUNK = r"image_encoder\.trunk"
_HF_TRUNK = "vision_encoder.backbone"
_DEC = r"sam_mask_decoder"
_HF_DEC = "mask_decoder"
_ATTN = r"(self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"

RULES = [
    (rf"{_TRUNK}\.pos_embed", f"{_HF_TRUNK}.pos_embed"),
    (rf"{_TRUNK}\.pos_embed_window", f"{_HF_TRUNK}.pos_embed_window"),
    (rf"{_TRUNK}\.patch_embed\.proj\.(weight|bias)", rf"{_HF_TRUNK}.patch_embed.projection.\1"),
    (rf"{_TRUNK}\.blocks\.(\d+)\.norm([12])\.(weight|bias)", rf"{_HF_TRUNK}.blocks.\1.layer_norm\2.\3"),
    (rf"{_TRUNK}\.blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)", rf"{_HF_TRUNK}.blocks.\1.attn.\2.\3"),
    (rf"{_TRUNK}\.blocks\.(\d+)\.mlp\.layers\.0\.(weight|bias)", rf"{_HF_TRUNK}.blocks.\1.mlp.proj_in.\2"),
    (rf"{_TRUNK}\.blocks\.(\d+)\.mlp\.layers\.1\.(weight|bias)", rf"{_HF_TRUNK}.blocks.\1.mlp.proj_out.\2"),
    (rf"{_TRUNK}\.blocks\.(\d+)\.proj\.(weight|bias)", rf"{_HF_TRUNK}.blocks.\1.proj.\2"),
    (r"image_encoder\.neck\.convs\.(\d+)\.conv\.(weight|bias)", r"vision_encoder.neck.convs.\1.\2"),
    ("no_mem_embed", "no_memory_embedding"),
    # prompt encoder
    *prompt_encoder_rules(r"sam_prompt_encoder"),
    # mask decoder
    (rf"{_DEC}\.(iou_token|mask_tokens|obj_score_token)\.weight", rf"{_HF_DEC}.\1.weight"),
    (rf"{_DEC}\.(conv_s0|conv_s1)\.(weight|bias)", rf"{_HF_DEC}.\1.\2"),
    (rf"{_DEC}\.transformer\.layers\.(\d+)\.{_ATTN}\.(q_proj|k_proj|v_proj)\.(weight|bias)",
     rf"{_HF_DEC}.transformer.layers.\1.\2.\3.\4"),
    (rf"{_DEC}\.transformer\.layers\.(\d+)\.{_ATTN}\.out_proj\.(weight|bias)",
     rf"{_HF_DEC}.transformer.layers.\1.\2.o_proj.\3"),
    (rf"{_DEC}\.transformer\.layers\.(\d+)\.norm([1-4])\.(weight|bias)",
     rf"{_HF_DEC}.transformer.layers.\1.layer_norm\2.\3"),
    (rf"{_DEC}\.transformer\.layers\.(\d+)\.mlp\.layers\.0\.(weight|bias)",
     rf"{_HF_DEC}.transformer.layers.\1.mlp.proj_in.\2"),
    (rf"{_DEC}\.transformer\.layers\.(\d+)\.mlp\.layers\.1\.(weight|bias)",
     rf"{_HF_DEC}.transformer.layers.\1.mlp.proj_out.\2"),
    (rf"{_DEC}\.transformer\.final_attn_token_to_image\.(q_proj|k_proj|v_proj)\.(weight|bias)",
     rf"{_HF_DEC}.transformer.final_attn_token_to_image.\1.\2"),
    (rf"{_DEC}\.transformer\.final_attn_token_to_image\.out_proj\.(weight|bias)",
     rf"{_HF_DEC}.transformer.final_attn_token_to_image.o_proj.\1"),
    (rf"{_DEC}\.transformer\.norm_final_attn\.(weight|bias)", rf"{_HF_DEC}.transformer.layer_norm_final_attn.\1"),
    (rf"{_DEC}\.output_upscaling\.0\.(weight|bias)", rf"{_HF_DEC}.upscale_conv1.\1"),
    (rf"{_DEC}\.output_upscaling\.1\.(weight|bias)", rf"{_HF_DEC}.upscale_layer_norm.\1"),
    (rf"{_DEC}\.output_upscaling\.3\.(weight|bias)", rf"{_HF_DEC}.upscale_conv2.\1"),
    *mlp_rules(rf"{_DEC}\.output_hypernetworks_mlps\.(\d+)", rf"{_HF_DEC}.output_hypernetworks_mlps.\1", 3),
    *mlp_rules(rf"{_DEC}\.iou_prediction_head", f"{_HF_DEC}.iou_prediction_head", 3),
    *mlp_rules(rf"{_DEC}\.pred_obj_score_head", f"{_HF_DEC}.pred_obj_score_head", 3),
]
_MEM_ATTN = r"memory_attention\.layers\.(\d+)\.(self_attn|cross_attn_image)"
_MASK_DOWN = r"memory_encoder\.mask_downsampler\.encoder"
_FUSER = r"memory_encoder\.fuser\.layers\.(\d+)"
_HF_FUSER = r"memory_encoder.memory_fuser.layers.\1"
# The memory half of the video model: memory attention (RoPE self/cross attention over past frames),
# memory encoder (mask downsampler + ConvNeXt fuser), object pointers and temporal encodings.
MEMORY_RULES = [
    ("maskmem_tpos_enc", "memory_temporal_positional_encoding"),
    ("no_mem_pos_enc", "no_memory_positional_encoding"),
    ("no_obj_ptr", "no_object_pointer"),
    ("no_obj_embed_spatial", "occlusion_spatial_embedding_parameter"),
    (r"mask_downsample\.(weight|bias)", r"mask_downsample.\1"),
    *mlp_rules(r"obj_ptr_proj", "object_pointer_proj", 3),
    (r"obj_ptr_tpos_proj\.(weight|bias)", r"temporal_positional_encoding_projection_layer.\1"),
    (rf"{_MEM_ATTN}\.(q_proj|k_proj|v_proj)\.(weight|bias)", r"memory_attention.layers.\1.\2.\3.\4"),
    (rf"{_MEM_ATTN}\.out_proj\.(weight|bias)", r"memory_attention.layers.\1.\2.o_proj.\3"),
    (r"memory_attention\.layers\.(\d+)\.(linear1|linear2)\.(weight|bias)", r"memory_attention.layers.\1.\2.\3"),
    (r"memory_attention\.layers\.(\d+)\.norm([1-3])\.(weight|bias)", r"memory_attention.layers.\1.layer_norm\2.\3"),
    (r"memory_attention\.norm\.(weight|bias)", r"memory_attention.layer_norm.\1"),
    # Meta's downsampler is one Sequential (conv, norm, GELU) x 4 then a 1x1 conv: indices 0,1 / 3,4 / ...
    *[(rf"{_MASK_DOWN}\.{3 * i}\.(weight|bias)", rf"memory_encoder.mask_downsampler.layers.{i}.conv.\1")
      for i in range(4)],
    *[(rf"{_MASK_DOWN}\.{3 * i + 1}\.(weight|bias)", rf"memory_encoder.mask_downsampler.layers.{i}.layer_norm.\1")
      for i in range(4)],
    (rf"{_MASK_DOWN}\.12\.(weight|bias)", r"memory_encoder.mask_downsampler.final_conv.\1"),
    (r"memory_encoder\.pix_feat_proj\.(weight|bias)", r"memory_encoder.feature_projection.\1"),
    (r"memory_encoder\.out_proj\.(weight|bias)", r"memory_encoder.projection.\1"),
    (rf"{_FUSER}\.gamma", f"{_HF_FUSER}.scale"),
    (rf"{_FUSER}\.dwconv\.(weight|bias)", f"{_HF_FUSER}.depthwise_conv.\\2"),
    (rf"{_FUSER}\.norm\.(weight|bias)", f"{_HF_FUSER}.layer_norm.\\2"),
    (rf"{_FUSER}\.pwconv([12])\.(weight|bias)", f"{_HF_FUSER}.pointwise_conv\\2.\\3"),
]
# Parameters of the video model that image segmentation never uses (all generations).
KNOWN_UNUSED = [
    r"memory_attention\..+",
    r"memory_encoder\..+",
    "maskmem_tpos_enc",
    "no_mem_pos_enc",
    "no_obj_ptr",
    r"mask_downsample\.(weight|bias)",
    r"obj_ptr_proj\.layers\.[0-2]\.(weight|bias)",
]
# Video-only parameters that only SAM2.1 checkpoints carry.
SAM21_ONLY = ["no_obj_embed_spatial", r"obj_ptr_tpos_proj\.(weight|bias)"]

_GAUSSIAN = "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
_POINTS = "sam_prompt_encoder.point_embeddings.{}.weight"


def looks_like_meta_sam2(state_dict: dict) -> bool:
    return any(k.startswith("image_encoder.trunk.") for k in state_dict) and any(
        k.startswith("sam_mask_decoder.") for k in state_dict
    )


def generation(state_dict: dict) -> str:
    """"2.1" when the SAM2.1-only video parameters are present, else "2"."""
    return "2.1" if "no_obj_embed_spatial" in state_dict or "obj_ptr_tpos_proj.weight" in state_dict else "2"


def detect_variant(state_dict: dict, path: str | Path) -> str:
    """Registry name (e.g. "sam2.1-hiera-base-plus") from the trunk's width and depth."""
    from samadapt.modeling.registry import REGISTRY

    try:
        width = int(state_dict["image_encoder.trunk.patch_embed.proj.weight"].shape[0])
    except KeyError:
        raise UserError("not a SAM2 checkpoint: image_encoder.trunk.patch_embed.proj.weight is missing", path)
    blocks = {int(k.split(".")[3]) for k in state_dict if k.startswith("image_encoder.trunk.blocks.")}
    depth = max(blocks) + 1 if blocks else 0
    gen = generation(state_dict)
    for spec in REGISTRY.values():
        if spec.family == "sam2" and spec.generation == gen:
            if spec.encoder.embed_dim == width and sum(spec.encoder.stages) == depth:
                return spec.name
    raise UserError(f"SAM2 checkpoint with an unknown trunk (width {width}, {depth} blocks)", path)


def convert(state_dict: dict) -> Converted:
    """Rename a Meta SAM2/SAM2.1 state dict to `Sam2Model` keys (strictness is checked later)."""
    sd = dict(state_dict)
    special: dict[str, torch.Tensor] = {}
    if _GAUSSIAN in sd:
        gaussian = sd.pop(_GAUSSIAN)
        # transformers keeps two copies of the random Fourier matrix (prompt encoder and
        # image-wide positional encoding); Meta shares one.
        special["shared_image_embedding.positional_embedding"] = gaussian
        special["prompt_encoder.shared_embedding.positional_embedding"] = gaussian
    point_keys = [_POINTS.format(i) for i in range(4)]
    if all(k in sd for k in point_keys):
        special["prompt_encoder.point_embed.weight"] = torch.cat([sd.pop(k) for k in point_keys], dim=0)
    unused = KNOWN_UNUSED + (SAM21_ONLY if generation(state_dict) == "2.1" else [])
    out = rename_keys(sd, RULES, unused)
    out.state_dict.update(special)
    return out


def has_memory(state_dict: dict) -> bool:
    """Whether a Meta SAM2 state dict carries the memory half (image-only exports do not)."""
    return any(k.startswith("memory_attention.") for k in state_dict) and "maskmem_tpos_enc" in state_dict


def convert_video(state_dict: dict) -> Converted:
    """Rename a whole Meta SAM2/SAM2.1 state dict to `Sam2VideoModel` keys: nothing is dropped, so
    every key either maps or is reported as unmatched (strictness is checked later)."""
    image = convert({k: v for k, v in state_dict.items() if not _is_memory_key(k)})
    memory = rename_keys({k: v for k, v in state_dict.items() if _is_memory_key(k)}, MEMORY_RULES)
    image.state_dict.update(memory.state_dict)
    image.unmatched += memory.unmatched + image.unused
    image.unused = []
    return image


def _is_memory_key(key: str) -> bool:
    return any(re.fullmatch(p, key) for p in KNOWN_UNUSED + SAM21_ONLY)
