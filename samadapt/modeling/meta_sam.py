"""Meta's SAM checkpoints (`sam_vit_b_01ec64.pth`, `sam_vit_l_*.pth`, `sam_vit_h_*.pth`) -> transformers.

Meta stores a plain state dict. SAM's ViT has an absolute position embedding (1, S/16, S/16, C)
and, in its global-attention blocks, relative-position tables of length 2·S/16 − 1; both are tied
to the input size, so `resize_for_image_size` interpolates them when the model runs at another size
(windowed blocks keep their 2·14 − 1 tables).
"""

from __future__ import annotations

from pathlib import Path

from samadapt.errors import UserError
from samadapt.modeling.key_mapping import (
    Converted,
    interpolate_grid,
    interpolate_rel_pos,
    mlp_rules,
    prompt_encoder_rules,
    rename_keys,
)

_VIT = r"image_encoder"
_HF_VIT = "vision_encoder"
_DEC = r"mask_decoder"
_ATTN = r"(self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"

RULES = [
    (rf"{_VIT}\.pos_embed", f"{_HF_VIT}.pos_embed"),
    (rf"{_VIT}\.patch_embed\.proj\.(weight|bias)", rf"{_HF_VIT}.patch_embed.projection.\1"),
    (rf"{_VIT}\.blocks\.(\d+)\.norm([12])\.(weight|bias)", rf"{_HF_VIT}.layers.\1.layer_norm\2.\3"),
    (rf"{_VIT}\.blocks\.(\d+)\.attn\.(rel_pos_h|rel_pos_w)", rf"{_HF_VIT}.layers.\1.attn.\2"),
    (rf"{_VIT}\.blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)", rf"{_HF_VIT}.layers.\1.attn.\2.\3"),
    (rf"{_VIT}\.blocks\.(\d+)\.mlp\.(lin1|lin2)\.(weight|bias)", rf"{_HF_VIT}.layers.\1.mlp.\2.\3"),
    (rf"{_VIT}\.neck\.0\.weight", f"{_HF_VIT}.neck.conv1.weight"),
    (rf"{_VIT}\.neck\.1\.(weight|bias)", rf"{_HF_VIT}.neck.layer_norm1.\1"),
    (rf"{_VIT}\.neck\.2\.weight", f"{_HF_VIT}.neck.conv2.weight"),
    (rf"{_VIT}\.neck\.3\.(weight|bias)", rf"{_HF_VIT}.neck.layer_norm2.\1"),
    # prompt encoder
    *prompt_encoder_rules(r"prompt_encoder"),
    (r"prompt_encoder\.point_embeddings\.([0-3])\.weight", r"prompt_encoder.point_embed.\1.weight"),
    # mask decoder (transformers keeps Meta's attention and MLP names here)
    (rf"{_DEC}\.(iou_token|mask_tokens)\.weight", r"mask_decoder.\1.weight"),
    (rf"{_DEC}\.transformer\.layers\.(\d+)\.{_ATTN}\.(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)",
     r"mask_decoder.transformer.layers.\1.\2.\3.\4"),
    (rf"{_DEC}\.transformer\.layers\.(\d+)\.norm([1-4])\.(weight|bias)",
     r"mask_decoder.transformer.layers.\1.layer_norm\2.\3"),
    (rf"{_DEC}\.transformer\.layers\.(\d+)\.mlp\.(lin1|lin2)\.(weight|bias)",
     r"mask_decoder.transformer.layers.\1.mlp.\2.\3"),
    (rf"{_DEC}\.transformer\.final_attn_token_to_image\.(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)",
     r"mask_decoder.transformer.final_attn_token_to_image.\1.\2"),
    (rf"{_DEC}\.transformer\.norm_final_attn\.(weight|bias)", r"mask_decoder.transformer.layer_norm_final_attn.\1"),
    (rf"{_DEC}\.output_upscaling\.0\.(weight|bias)", r"mask_decoder.upscale_conv1.\1"),
    (rf"{_DEC}\.output_upscaling\.1\.(weight|bias)", r"mask_decoder.upscale_layer_norm.\1"),
    (rf"{_DEC}\.output_upscaling\.3\.(weight|bias)", r"mask_decoder.upscale_conv2.\1"),
    *mlp_rules(rf"{_DEC}\.output_hypernetworks_mlps\.(\d+)", r"mask_decoder.output_hypernetworks_mlps.\1", 3),
    *mlp_rules(rf"{_DEC}\.iou_prediction_head", "mask_decoder.iou_prediction_head", 3),
]

# Meta's SAM checkpoints hold only what image segmentation uses.
KNOWN_UNUSED: list[str] = []

_GAUSSIAN = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"


def looks_like_meta_sam(state_dict: dict) -> bool:
    return "image_encoder.patch_embed.proj.weight" in state_dict and "mask_decoder.iou_token.weight" in state_dict


def detect_variant(state_dict: dict, path: str | Path) -> tuple[str, int]:
    """(registry name, image size the checkpoint was built for) from the ViT width and pos-embed."""
    from samadapt.modeling.registry import REGISTRY

    try:
        width = int(state_dict["image_encoder.patch_embed.proj.weight"].shape[0])
        grid = int(state_dict["image_encoder.pos_embed"].shape[1])
    except KeyError as exc:
        raise UserError(f"not a SAM checkpoint: {exc.args[0]} is missing", path) from None
    blocks = {int(k.split(".")[2]) for k in state_dict if k.startswith("image_encoder.blocks.")}
    depth = max(blocks) + 1 if blocks else 0
    for spec in REGISTRY.values():
        if spec.family == "sam" and spec.encoder.embed_dim == width and spec.encoder.depth == depth:
            return spec.name, grid * spec.encoder.patch_size
    raise UserError(f"SAM checkpoint with an unknown ViT (width {width}, {depth} blocks)", path)


def convert(state_dict: dict) -> Converted:
    """Rename a Meta SAM state dict to `SamModel` keys (strictness is checked later)."""
    sd = dict(state_dict)
    special = {}
    if _GAUSSIAN in sd:
        gaussian = sd.pop(_GAUSSIAN)
        special["shared_image_embedding.positional_embedding"] = gaussian
        special["prompt_encoder.shared_embedding.positional_embedding"] = gaussian
    out = rename_keys(sd, RULES, KNOWN_UNUSED)
    out.state_dict.update(special)
    return out


def resize_for_image_size(hf_state_dict: dict, target: dict) -> dict:
    """Interpolate SAM's size-dependent tensors (transformers names) to the shapes in `target`.

    `target` is the state dict of the model being loaded into. Only `vision_encoder.pos_embed`
    and `rel_pos_h/w` tables change; every other tensor is returned untouched so strict checks
    still catch real mismatches.
    """
    out = dict(hf_state_dict)
    key = "vision_encoder.pos_embed"
    if key in out and key in target and out[key].shape != target[key].shape:
        if out[key].shape[-1] == target[key].shape[-1]:
            out[key] = interpolate_grid(out[key], target[key].shape[1])
    for name, value in hf_state_dict.items():
        if name.endswith((".attn.rel_pos_h", ".attn.rel_pos_w")) and name in target:
            want = target[name].shape
            if value.shape != want and value.shape[1] == want[1]:
                out[name] = interpolate_rel_pos(value, want[0])
    return out

