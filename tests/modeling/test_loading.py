"""Loading formats, strictness, integrity and safety (no real checkpoints needed)."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from samadapt.errors import UserError
from samadapt.modeling.loading import load_model, load_model_folder, load_weights
from samadapt.modeling.model_folder import save_model_folder
from samadapt.modeling.registry import build_model

from .meta_reference import build_meta_sam2

SIZE = 256
pytestmark = pytest.mark.reference  # checkpoints are made with Meta's sam2 package


@pytest.fixture(scope="module")
def meta_tiny_file(tmp_path_factory):
    """Meta-format SAM2.1 Hiera-T checkpoint with random weights."""
    meta = build_meta_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", SIZE, seed=7)
    path = tmp_path_factory.mktemp("meta") / "sam2.1_hiera_tiny.pt"
    state = meta.state_dict()
    torch.save({"model": state}, path)
    return path, state


def _save_meta(tmp_path, state, name="edited.pt"):
    path = tmp_path / name
    torch.save({"model": state}, path)
    return path


def test_meta_checkpoint_names_and_known_unused(meta_tiny_file):
    from samadapt.modeling.loading import read_weights

    weights = read_weights(meta_tiny_file[0])
    assert weights.variant == "sam2.1-hiera-tiny" and weights.source_format == "meta-sam2"
    assert "no_obj_embed_spatial" in weights.unused and "obj_ptr_tpos_proj.weight" in weights.unused
    assert any(k.startswith("memory_attention.") for k in weights.unused) and not weights.unmatched


def test_missing_key(tmp_path, meta_tiny_file):
    state = dict(meta_tiny_file[1])
    del state["sam_mask_decoder.conv_s0.weight"]
    with pytest.raises(UserError, match=r"missing.*mask_decoder\.conv_s0\.weight") as info:
        load_model(weights=_save_meta(tmp_path, state), image_size=SIZE)
    assert "edited.pt" in str(info.value)


def test_unexpected_key_is_not_swallowed(tmp_path, meta_tiny_file):
    state = dict(meta_tiny_file[1])
    state["image_encoder.trunk.blocks.0.attn.extra"] = torch.zeros(3)
    state["memory_attention_typo.weight"] = torch.zeros(3)  # close to a known-unused prefix
    with pytest.raises(UserError, match=r"unexpected.*(attn\.extra|memory_attention_typo)"):
        load_model(weights=_save_meta(tmp_path, state), image_size=SIZE)


def test_wrong_shape(tmp_path, meta_tiny_file):
    state = dict(meta_tiny_file[1])
    state["sam_mask_decoder.iou_token.weight"] = torch.zeros(1, 128)
    with pytest.raises(UserError, match=r"shape.*iou_token"):
        load_model(weights=_save_meta(tmp_path, state), image_size=SIZE)


def test_other_variant_named(meta_tiny_file):
    with pytest.raises(UserError, match=r"sam2\.1-hiera-tiny.*sam2-hiera-small"):
        load_model("sam2-hiera-small", meta_tiny_file[0], image_size=SIZE)
    with pytest.raises(UserError, match=r"sam2\.1-hiera-tiny.*sam2-hiera-tiny"):  # generation matters
        load_model("sam2-hiera-tiny", meta_tiny_file[0], image_size=SIZE)
    with pytest.raises(UserError, match="SAM2"):
        load_weights(build_model("sam-vit-base", SIZE), meta_tiny_file[0])


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_malicious_truncated_empty_and_foreign_files(tmp_path, meta_tiny_file, capsys):
    evil = tmp_path / "evil.pt"
    torch.save({"model": _RunsCode()}, evil)
    raw = tmp_path / "evil_raw.pth"
    raw.write_bytes(pickle.dumps(_RunsCode()))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(meta_tiny_file[0].read_bytes()[:5000])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    text = tmp_path / "notes.pt"
    torch.save({"epoch": 3}, text)
    for path in (evil, raw, truncated, empty, text):
        with pytest.raises(UserError) as info:
            load_model(weights=path)
        assert path.name in str(info.value)
    assert "must never run" not in capsys.readouterr().out
    with pytest.raises(UserError, match="not found"):
        load_model(weights=tmp_path / "absent.pt")


def test_huggingface_directory_round_trip(tmp_path, meta_tiny_file, capsys):
    model = load_model(weights=meta_tiny_file[0], image_size=SIZE)
    model.hf.save_pretrained(tmp_path / "hf")
    assert (tmp_path / "hf" / "config.json").is_file() and (tmp_path / "hf" / "model.safetensors").is_file()
    again = load_model("sam2.1-hiera-tiny", tmp_path / "hf")
    assert again.image_size == SIZE
    for key, value in model.hf.state_dict().items():
        assert torch.equal(value, again.hf.state_dict()[key]), key
    capsys.readouterr()
    # image-only weights fit SAM2 and SAM2.1 alike: the choice is made, and said
    assert load_model(weights=tmp_path / "hf").name == "sam2.1-hiera-tiny"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sam2-hiera-tiny and sam2.1-hiera-tiny alike; using sam2.1-hiera-tiny" in err[0]
    # a sam2_video-style folder carries video parameters: recognised and dropped by name
    from safetensors.torch import load_file, save_file

    weights = load_file(tmp_path / "hf" / "model.safetensors")
    weights["occlusion_spatial_embedding_parameter"] = torch.zeros(1, 64)
    weights["memory_attention.layers.0.weight"] = torch.zeros(2)
    save_file(weights, tmp_path / "hf" / "model.safetensors")
    assert load_model(weights=tmp_path / "hf").name == "sam2.1-hiera-tiny"
    assert capsys.readouterr().err == ""  # the video parameters tell the generation: nothing to say
    weights["vision_encoder.surprise"] = torch.zeros(2)
    save_file(weights, tmp_path / "hf" / "model.safetensors")
    with pytest.raises(UserError, match="surprise"):
        load_model(weights=tmp_path / "hf")


def test_own_checkpoint_round_trip_and_hash(tmp_path, meta_tiny_file):
    model = load_model(weights=meta_tiny_file[0], image_size=SIZE)
    prompts = torch.randn(3, 2, 256)
    out_dir = save_model_folder(
        model, tmp_path / "ckpt", provenance={"command": "samadapt test", "parent": str(meta_tiny_file[0])},
        extra_tensors={"class_prompts": prompts}, extra_config={"classes": ["a", "b", "c"]},
    )
    assert sorted(p.name for p in out_dir.iterdir()) == ["extra.safetensors", "model.safetensors", "samadapt.json"]
    loaded = load_model_folder(out_dir)
    assert loaded.model.name == "sam2.1-hiera-tiny" and loaded.model.image_size == SIZE
    assert loaded.extra_config == {"classes": ["a", "b", "c"]} and "saved_at" in loaded.provenance
    assert torch.equal(loaded.extra_tensors["class_prompts"], prompts)
    for key, value in model.hf.state_dict().items():
        assert torch.equal(value, loaded.model.hf.state_dict()[key]), key
    assert load_model(weights=out_dir).name == "sam2.1-hiera-tiny"
    with pytest.raises(UserError, match="sam2-hiera-small"):
        load_model("sam2-hiera-small", out_dir)

    weights = out_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256 mismatch") as info:
        load_model_folder(out_dir)
    assert "model.safetensors" in str(info.value)
    meta = json.loads((out_dir / "samadapt.json").read_text())
    assert meta["files"]["model.safetensors"] and meta["provenance"]["command"] == "samadapt test"


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    import samadapt.modeling.model_folder as model_folder

    model = build_model("sam2-hiera-tiny", SIZE)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(model_folder, "sha256_file", boom)
    with pytest.raises(OSError):
        save_model_folder(model, tmp_path / "ckpt", provenance={})
    assert not (tmp_path / "ckpt").exists() and list(tmp_path.iterdir()) == []
