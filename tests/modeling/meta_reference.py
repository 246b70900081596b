"""Build Meta's reference models (test-only packages) with random weights, and compare outputs."""

from __future__ import annotations

import importlib.util
import sys
import types
from functools import partial

import pytest
import torch


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ in float64."""
    actual, expected = actual.double(), expected.double()
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-30))


def randomise(module: torch.nn.Module, seed: int, std: float = 0.05) -> None:
    """Overwrite every parameter and float buffer (zero-initialised ones included) with seeded noise,
    so that a wrong or missing mapping of any tensor changes the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]:
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * std)


def build_meta_sam2(config: str, image_size: int, seed: int = 0):
    """Meta's SAM2 (e.g. config "configs/sam2.1/sam2.1_hiera_t.yaml") at `image_size`, random weights."""
    pytest.importorskip("sam2")
    from sam2.build_sam import build_sam2

    model = build_sam2(config, None, device="cpu", hydra_overrides_extra=[f"++model.image_size={image_size}"])
    randomise(model, seed)
    return model.eval()


def meta_sam2_features(model, pixels: torch.Tensor) -> list[torch.Tensor]:
    """[(B,32,S/4,S/4), (B,64,S/8,S/8), (B,256,S/16,S/16)] exactly as SAM2ImagePredictor feeds its decoder."""
    backbone = model.forward_image(pixels)
    _, feats, _, sizes = model._prepare_backbone_features(backbone)
    feats[-1] = feats[-1] + model.no_mem_embed
    batch = pixels.shape[0]
    return [f.permute(1, 2, 0).reshape(batch, -1, *s) for f, s in zip(feats, sizes)]


def meta_sam2_decode(model, feats, coords, labels, multimask):
    """Meta's prompt encoder + mask decoder; boxes are passed as corner points labelled 2, 3."""
    sparse, dense = model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    masks, iou, _, obj = model.sam_mask_decoder(
        image_embeddings=feats[2], image_pe=model.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
        repeat_image=False, high_res_features=feats[:2],
    )
    return masks, iou, obj


def import_segment_anything():
    """`segment_anything.build_sam` / `.modeling` without its package __init__ (which needs torchvision)."""
    # Check the parent package, not a submodule: a failed `import segment_anything` elsewhere (its
    # __init__ needs torchvision) leaves `.modeling` in sys.modules but removes the package itself.
    if "segment_anything" not in sys.modules:
        spec = importlib.util.find_spec("segment_anything")
        if spec is None:
            pytest.skip("segment-anything (Meta's SAM code) is not installed")
        package = types.ModuleType("segment_anything")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["segment_anything"] = package
    import segment_anything.build_sam as build_sam
    import segment_anything.modeling as modeling

    return build_sam, modeling


def build_meta_sam_vit_b(image_size: int, seed: int = 0):
    """Meta's SAM ViT-B built from its own modules at `image_size` (its registry is 1024-only)."""
    _, m = import_segment_anything()
    side = image_size // 16
    model = m.Sam(
        image_encoder=m.ImageEncoderViT(
            depth=12, embed_dim=768, img_size=image_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=12, patch_size=16, qkv_bias=True,
            use_rel_pos=True, global_attn_indexes=[2, 5, 8, 11], window_size=14, out_chans=256,
        ),
        prompt_encoder=m.PromptEncoder(
            embed_dim=256, image_embedding_size=(side, side), input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=m.MaskDecoder(
            num_multimask_outputs=3,
            transformer=m.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
    )
    randomise(model, seed)
    return model.eval()


def meta_sam_decode(model, embedding, points=None, boxes=None, multimask=False):
    sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=None)
    return model.mask_decoder(
        image_embeddings=embedding, image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
    )
