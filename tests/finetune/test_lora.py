"""`--train lora`: what trains, what changes, merged weights read like any run, adapter-only
checkpoints and resume."""

from __future__ import annotations

import copy
import csv

import pytest
import torch

from samadapt.errors import UserError

from .conftest import read_json, run_cli

TINY = ["--model", "sam2-hiera-tiny", "--image-size", "64", "--batch-size", "2", "--no-augment", "--train", "lora"]
HIERA_T_BLOCK_DIMS = [(96, 96)] * 1 + [(96, 192)] + [(192, 192)] + [(192, 384)] + [(384, 384)] * 6 + [(384, 768)] + [(768, 768)]


@pytest.fixture(scope="module")
def base64():
    """One Hiera-T at 64 px; each test adapts its own copy (building one takes seconds)."""
    from samadapt.modeling.registry import build_model

    return build_model("sam2-hiera-tiny", 64)


@pytest.fixture
def make_segmenter(base64):
    def make(settings, classes=("a", "b")):
        from samadapt.modeling.class_prompts import ClassPromptSegmenter
        from samadapt.modeling.lora import add_lora

        model = ClassPromptSegmenter(copy.deepcopy(base64), list(classes), tokens_per_class=2)
        add_lora(model.base, settings)
        return model

    return make


def _perturb_adapters(model):
    """B starts at zero (the adapted model equals the original): make the adapters do something."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_B." in name:
                param.normal_(std=0.05)


def test_only_adapters_prompts_and_decoder_get_gradients_and_change(make_segmenter):
    from samadapt.modeling.lora import LoraSettings

    model = make_segmenter(LoraSettings(rank=2, targets=("qkv",)))
    counts = model.configure_trainable("lora")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(".lora_" in n or n == "class_prompts" or n.startswith("base.hf.mask_decoder.") for n in trainable)
    # rank 2 on each qkv (dim -> 3 * dim_out, Hiera-T's 12 blocks): 2 * (in + out) per block
    lora = sum(2 * (d_in + 3 * d_out) for d_in, d_out in HIERA_T_BLOCK_DIMS)
    decoder = sum(p.numel() for p in model.base.mask_decoder.parameters())
    assert counts["trainable"] == lora + decoder + model.class_prompts.numel()

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    model(torch.randn(1, 3, 64, 64)).square().mean().backward()
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed <= trainable
    assert any(".lora_B." in n for n in changed) and "class_prompts" in changed


def test_lora_decoder_freezes_the_decoder_transformer_but_not_its_head(make_segmenter):
    from samadapt.modeling.lora import LoraSettings

    model = make_segmenter(LoraSettings(rank=2, targets=("mlp",), decoder=True))
    model.configure_trainable("lora")
    params = dict(model.named_parameters())
    transformer = "base.hf.mask_decoder.transformer."
    assert not params[f"{transformer}layers.0.self_attn.q_proj.base_layer.weight"].requires_grad
    assert params[f"{transformer}layers.0.self_attn.q_proj.lora_A.default.weight"].requires_grad
    assert not params[f"{transformer}layers.0.layer_norm1.weight"].requires_grad
    assert params["base.hf.mask_decoder.iou_prediction_head.proj_in.weight"].requires_grad
    assert not params["base.hf.vision_encoder.backbone.blocks.0.mlp.proj_in.base_layer.weight"].requires_grad


def test_merged_copy_predicts_the_same_with_the_plain_layer_names(make_segmenter, base64):
    from samadapt.modeling.lora import LoraSettings, has_lora, merged_copy

    model = make_segmenter(LoraSettings(rank=4, decoder=True)).eval()
    _perturb_adapters(model)
    merged = merged_copy(model.base)
    assert not has_lora(merged.hf) and has_lora(model.base.hf)  # the trained model keeps its adapters
    assert set(merged.hf.state_dict()) == set(base64.hf.state_dict())
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(pixels)
        model.base = merged
        torch.testing.assert_close(model(pixels), expected, rtol=1e-4, atol=1e-4)


def test_saved_run_loads_as_a_plain_run_with_the_same_predictions(make_segmenter, tmp_path):
    from samadapt.finetune.runs import ADAPTER_DIR, load_finetune_run, save_run_model
    from samadapt.modeling.lora import LoraSettings

    model = make_segmenter(LoraSettings(rank=4))
    model.configure_trainable("lora")
    _perturb_adapters(model)
    model.eval()
    save_run_model(model, tmp_path, {"lora": LoraSettings(rank=4).as_dict()}, {"command": "finetune"})
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(load_finetune_run(tmp_path).model(pixels), model(pixels), rtol=1e-4, atol=1e-4)
    adapter = read_json(tmp_path / ADAPTER_DIR / "adapter.json")
    assert adapter["parameters"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert adapter["bytes"] < (tmp_path / "model" / "model.safetensors").stat().st_size / 4


@pytest.mark.parametrize("settings, message", [
    ({"targets": ("attention",)}, "--lora-targets 'attention' matches no linear layer"),
    ({"rank": 0}, "--lora-rank 0"),
])
def test_bad_adapters_are_refused(make_segmenter, settings, message):
    from samadapt.modeling.lora import LoraSettings

    with pytest.raises(UserError, match=message):
        make_segmenter(LoraSettings(**settings))


def test_lora_options_need_train_lora():
    from samadapt.finetune.config import FinetuneConfig

    with pytest.raises(UserError, match="--lora-decoder applies only to --train lora"):
        FinetuneConfig(data="d", splits="s", out="o", train="all", lora_decoder=True).validate()
    with pytest.raises(UserError, match="--lora-targets"):
        FinetuneConfig(data="d", splits="s", out="o", train="lora", lora_targets="qkv,,mlp").validate()


def test_lora_run_trains_saves_adapters_and_resumes(anatomy, tmp_path, capsys):
    from samadapt.engine.checkpoint import load_resumable
    from samadapt.finetune.runs import load_finetune_run

    data, split = anatomy
    run = tmp_path / "run"
    args = ["finetune", "--data", data, "--splits", split, "--out", run, *TINY, "--lora-rank", "2", "--lr", "3e-3",
            "--repeat", "4"]
    code, _, err = run_cli([*args, "--epochs", "1"], capsys)
    assert code == 0, err
    state, _, _ = load_resumable(run / "checkpoints")
    summary = read_json(run / "summary.json")
    assert sum(t.numel() for t in state["model"].values()) == summary["parameters"]["trainable"]
    assert any(".lora_A." in name for name in state["model"])
    code, _, err = run_cli([*args, "--epochs", "3", "--resume"], capsys)
    assert code == 0, err
    summary = read_json(run / "summary.json")
    assert summary["epochs_completed"] == 3 and summary["resumed_from"]
    assert summary["recipe"]["name"] == "scratch-lora" and summary["adapter"]["lora"]["rank"] == 2
    with open(run / "epoch.csv") as handle:
        losses = [float(row["train_loss"]) for row in csv.DictReader(handle)]
    assert loaded_is_plain(load_finetune_run(run).model)
    assert losses[-1] < losses[0]
    code, _, err = run_cli([*args, "--epochs", "4", "--resume", "--lora-rank", "4"], capsys)
    assert code == 2 and "lora_rank" in err  # other adapters: refused, like any changed setting


def loaded_is_plain(model) -> bool:
    from samadapt.modeling.lora import has_lora

    return not has_lora(model)


@pytest.mark.parametrize("name", ["sam2-hiera-tiny", "sam-vit-base"])
def test_every_role_names_layers_of_both_families(name):
    from samadapt.modeling.lora import TARGET_ROLES, LoraSettings, target_module_names
    from samadapt.modeling.registry import build_hf_model, get_spec

    with torch.device("meta"):  # names only: no memory, no weights
        hf = build_hf_model(name)
    family = get_spec(name).family
    for role in TARGET_ROLES:
        names = target_module_names(hf, family, LoraSettings(targets=(role,)))
        assert names and all(".mask_decoder." not in f".{n}" for n in names), role
    with_decoder = target_module_names(hf, family, LoraSettings(targets=("qkv",), decoder=True))
    assert any(n.startswith("mask_decoder.transformer.") for n in with_decoder)
