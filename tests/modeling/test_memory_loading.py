"""Strict loading of SAM2's memory half (`Sam2VideoModel`): every key of every format used, none
missing, and weights without a memory refused by name."""

from __future__ import annotations

import pytest
import torch

from samadapt.errors import UserError
from samadapt.modeling.sam2_video import build_memory_model, load_memory_model


def _same_state(a, b) -> bool:
    sa, sb = a.hf.state_dict(), b.hf.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_hugging_face_video_folder_round_trips(tmp_path):
    model = build_memory_model("sam2.1-hiera-tiny", 64)
    model.hf.save_pretrained(tmp_path / "hf")
    loaded = load_memory_model(weights=tmp_path / "hf")
    assert (loaded.name, loaded.image_size) == ("sam2.1-hiera-tiny", 64)
    assert _same_state(model, loaded)


def test_sam2_and_sam21_memories_differ_by_their_two_parameters():
    sam2 = set(build_memory_model("sam2-hiera-tiny", 64).hf.state_dict())
    sam21 = set(build_memory_model("sam2.1-hiera-tiny", 64).hf.state_dict())
    assert sam21 - sam2 == {"occlusion_spatial_embedding_parameter",
                            "temporal_positional_encoding_projection_layer.weight",
                            "temporal_positional_encoding_projection_layer.bias"}


def test_image_only_weights_are_refused(tmp_path):
    meta_image_only = {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(96, 3, 7, 7),
                       "sam_mask_decoder.iou_token.weight": torch.zeros(1, 256)}
    torch.save({"model": meta_image_only}, tmp_path / "image.pt")
    with pytest.raises(UserError, match="has no memory weights"):
        load_memory_model(weights=tmp_path / "image.pt")
    with pytest.raises(UserError, match="sam-vit-base has no memory"):
        build_memory_model("sam-vit-base", 64)


@pytest.mark.reference
@pytest.mark.slow
def test_meta_checkpoint_loads_strictly(tmp_path):
    pytest.importorskip("sam2")
    from sam2.build_sam import build_sam2

    meta = build_sam2("configs/sam2/sam2_hiera_t.yaml", None, device="cpu",
                      hydra_overrides_extra=["++model.image_size=64"])
    state = meta.state_dict()
    torch.save({"model": state}, tmp_path / "meta.pt")
    loaded = load_memory_model(weights=tmp_path / "meta.pt", image_size=64)
    assert loaded.name == "sam2-hiera-tiny"
    ours = loaded.hf.state_dict()
    assert torch.equal(ours["memory_temporal_positional_encoding"], state["maskmem_tpos_enc"])
    assert torch.equal(ours["memory_encoder.memory_fuser.layers.1.scale"], state["memory_encoder.fuser.layers.1.gamma"])
    with pytest.raises(UserError, match="checkpoint is sam2-hiera-tiny but the model is sam2.1-hiera-tiny"):
        load_memory_model("sam2.1-hiera-tiny", tmp_path / "meta.pt", 64)
    torch.save({"model": {**state, "memory_attention.extra.weight": torch.zeros(1)}}, tmp_path / "extra.pt")
    with pytest.raises(UserError, match="1 unexpected key"):
        load_memory_model(weights=tmp_path / "extra.pt", image_size=64)
    missing = {k: v for k, v in state.items() if k != "memory_encoder.out_proj.bias"}
    torch.save({"model": missing}, tmp_path / "missing.pt")
    with pytest.raises(UserError, match="1 missing key.*memory_encoder.projection.bias"):
        load_memory_model(weights=tmp_path / "missing.pt", image_size=64)


META_CONFIGS = {
    "sam2-hiera-tiny": "configs/sam2/sam2_hiera_t.yaml", "sam2-hiera-small": "configs/sam2/sam2_hiera_s.yaml",
    "sam2-hiera-base-plus": "configs/sam2/sam2_hiera_b+.yaml", "sam2-hiera-large": "configs/sam2/sam2_hiera_l.yaml",
    "sam2.1-hiera-tiny": "configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1-hiera-small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1-hiera-base-plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1-hiera-large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}


@pytest.mark.reference
@pytest.mark.slow
@pytest.mark.parametrize("name", list(META_CONFIGS))
def test_every_released_architecture_loads_strictly(tmp_path, name):
    pytest.importorskip("sam2")
    from sam2.build_sam import build_sam2

    meta = build_sam2(META_CONFIGS[name], None, device="cpu", hydra_overrides_extra=["++model.image_size=64"])
    torch.save({"model": meta.state_dict()}, tmp_path / "meta.pt")
    del meta
    assert load_memory_model(weights=tmp_path / "meta.pt", image_size=64).name == name
