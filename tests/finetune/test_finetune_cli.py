"""`samadapt finetune` end to end on tiny phantoms: run folder, resume, MAE init, refusals."""

from __future__ import annotations

import pytest
import torch

from .conftest import read_json, run_cli

TINY = ["--model", "sam2-hiera-tiny", "--image-size", "64", "--batch-size", "2", "--no-augment"]


def _finetune(data, split, out, capsys, *extra):
    return run_cli(["finetune", "--data", data, "--splits", split, "--out", out, *TINY, *extra], capsys)


def test_run_folder_holds_model_classes_and_curves(anatomy, tmp_path, capsys):
    from samadapt.finetune.runs import load_finetune_run

    code, out, err = _finetune(*anatomy, tmp_path / "run", capsys, "--epochs", "1", "--loss", "dice+focal")
    assert code == 0, err
    assert "best: val Dice" in out
    run = tmp_path / "run"
    for name in ("config.json", "summary.json", "epoch.csv", "train.csv", "curves.png", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    loaded = load_finetune_run(run)
    assert loaded.class_names == ["left_lobe", "right_lobe", "core"]
    assert loaded.model.class_prompts.shape == (3, 4, 256)
    assert loaded.info["loss"] == "dice+focal" and loaded.info["fold"] == 0
    provenance = loaded.info["provenance"]
    assert provenance["init"] == "random" and provenance["command"] == "finetune"
    assert read_json(run / "summary.json")["parameters"]["trainable"] > 0


def test_resume_continues_to_more_epochs(anatomy, tmp_path, capsys):
    run = tmp_path / "run"
    assert _finetune(*anatomy, run, capsys, "--epochs", "1")[0] == 0
    code, _, err = _finetune(*anatomy, run, capsys, "--epochs", "1")
    assert code == 2 and "--resume" in err  # never silently overwrite a run
    code, _, err = _finetune(*anatomy, run, capsys, "--epochs", "2", "--resume")
    assert code == 0, err
    summary = read_json(run / "summary.json")
    assert summary["epochs_completed"] == 2 and summary["resumed_from"]
    code, _, err = _finetune(*anatomy, run, capsys, "--epochs", "3", "--resume", "--lr", "0.5")
    assert code == 2 and "lr" in err  # a different configuration is refused


def test_init_from_mae_run_loads_its_encoder(anatomy, tmp_path, capsys):
    from samadapt.finetune.runs import load_finetune_run
    from samadapt.modeling.model_folder import save_model_folder
    from samadapt.modeling.registry import build_model

    pretrained = build_model("sam2-hiera-tiny", 64)
    with torch.no_grad():
        for param in pretrained.image_encoder.parameters():
            param.add_(0.5)  # recognisably different from any fresh initialisation
    save_model_folder(pretrained, tmp_path / "mae" / "encoder", {"command": "pretrain"})
    code, _, err = _finetune(*anatomy, tmp_path / "run", capsys, "--epochs", "1", "--init", f"mae:{tmp_path / 'mae'}")
    assert code == 0, err
    loaded = load_finetune_run(tmp_path / "run")
    expected = pretrained.image_encoder.state_dict()
    for key, value in loaded.model.base.image_encoder.state_dict().items():
        torch.testing.assert_close(value, expected[key])  # --train decoder leaves the encoder as loaded
    assert loaded.info["provenance"]["init"] == "mae"


def test_init_from_a_run_reuses_its_prompts_and_refuses_unknown_classes(anatomy, tmp_path, capsys):
    from samadapt.data.phantoms import generate_phantoms
    from samadapt.finetune.runs import load_finetune_run

    first = tmp_path / "first"
    assert _finetune(*anatomy, first, capsys, "--epochs", "1")[0] == 0
    code, _, err = _finetune(*anatomy, tmp_path / "second", capsys, "--epochs", "1", "--init", f"ckpt:{first}", "--lr", "1e-9")
    assert code == 0, err
    before, after = load_finetune_run(first).model.class_prompts, load_finetune_run(tmp_path / "second").model.class_prompts
    torch.testing.assert_close(before, after, atol=1e-4, rtol=0)
    fa = generate_phantoms(tmp_path / "fa", n=4, size=64, kind="fa")
    run_cli(["data", "split", fa.parent, "--folds", "1", "--test-fraction", "0", "--out", tmp_path / "fa.json"], capsys)
    code, _, err = _finetune(fa, tmp_path / "fa.json", tmp_path / "third", capsys, "--epochs", "1", "--init", f"ckpt:{first}")
    assert code == 2 and "leakage" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("case", ["no_masks", "bad_fold", "bad_loss", "bad_train", "bad_init", "baseline_init"])
def test_bad_input_is_one_line_exit_2(case, anatomy, tmp_path, capsys):
    from PIL import Image

    data, split = anatomy
    extra = {"bad_fold": ["--fold", "3"], "bad_loss": ["--loss", "dice+hinge"], "bad_train": ["--train", "heads"],
             "bad_init": ["--init", "imagenet"], "baseline_init": ["--model", "unet", "--init", "mae:x"]}.get(case, [])
    if case == "no_masks":
        images = tmp_path / "images"
        images.mkdir()
        for i in range(3):
            Image.new("L", (32, 32), 10 * i).save(images / f"img{i}.png")
        data = images
    code, out, err = _finetune(data, split, tmp_path / "run", capsys, "--epochs", "1", *extra)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("samadapt: error:")
    expected = {"no_masks": "no masks", "bad_fold": "--fold 3", "bad_loss": "hinge", "bad_train": "heads",
                "bad_init": "imagenet", "baseline_init": "random weights"}[case]
    assert expected in err
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("mode", ["box", "points"])
def test_training_with_simulated_prompts(mode, anatomy, tmp_path, capsys):
    from samadapt.finetune.runs import load_finetune_run

    code, _, err = _finetune(*anatomy, tmp_path / "run", capsys, "--epochs", "1", "--prompt", mode)
    assert code == 0, err
    assert load_finetune_run(tmp_path / "run").info["prompt"] == mode
    code, _, err = _finetune(*anatomy, tmp_path / "bad", capsys, "--epochs", "1", "--prompt", mode, "--model", "unet",
                             "--train", "all")
    assert code == 2 and "takes no prompts" in err


def test_encoder_decoder_with_frozen_stages_and_layer_decay(anatomy, tmp_path, capsys):
    code, _, err = _finetune(*anatomy, tmp_path / "run", capsys, "--epochs", "1", "--train", "encoder-decoder",
                             "--freeze-stages", "2", "--encoder-lr", "1e-5", "--layer-decay", "0.8")
    assert code == 0, err
    header = (tmp_path / "run" / "train.csv").read_text().splitlines()[0]
    assert "lr_base.hf.vision_encoder/decay/layer4" in header  # per-layer groups are logged
    summary = read_json(tmp_path / "run" / "summary.json")
    assert 0 < summary["parameters"]["frozen"] < summary["parameters"]["trainable"]


@pytest.mark.parametrize("keep", ["best", "last"])
def test_keep_chooses_best_or_last_weights(keep, anatomy, tmp_path, capsys, monkeypatch):
    """`--keep last` saves the weights at the end of the budget (what cross-validation must score);
    `--keep best` saves the epoch with the best validation Dice."""
    import samadapt.finetune.training as training
    from samadapt.engine.checkpoint import load_training_state, load_resumable
    from samadapt.finetune.runs import load_finetune_run

    # Validation Dice falls every epoch, so the best epoch (the first) is not the last one.
    falling = iter([0.9, 0.5, 0.1])
    monkeypatch.setattr(training, "validation_dice", lambda *a, **k: {training.VAL_METRIC: next(falling)})
    run = tmp_path / "run"
    code, _, err = _finetune(*anatomy, run, capsys, "--epochs", "3", "--keep", keep)
    assert code == 0, err
    reference = (load_training_state(run / "checkpoints" / "best.pt")[0] if keep == "best"
                 else load_resumable(run / "checkpoints")[0])["model"]
    other = (load_resumable(run / "checkpoints")[0] if keep == "best"
             else load_training_state(run / "checkpoints" / "best.pt")[0])["model"]
    saved = load_finetune_run(run).model.state_dict()
    assert torch.equal(saved["class_prompts"], reference["class_prompts"])
    assert not torch.equal(saved["class_prompts"], other["class_prompts"])
    assert load_finetune_run(run).info["kept"] == keep


def test_keep_rejects_unknown_choice(anatomy, tmp_path, capsys):
    code, _, err = _finetune(*anatomy, tmp_path / "run", capsys, "--epochs", "1", "--keep", "median")
    assert code == 2 and "--keep 'median'" in err


def test_presence_gate_trains_and_is_restored(anatomy, tmp_path, capsys):
    from samadapt.finetune.runs import load_finetune_run

    code, out, err = _finetune(*anatomy, tmp_path / "run", capsys, "--epochs", "1", "--presence")
    assert code == 0, err
    loaded = load_finetune_run(tmp_path / "run")
    assert loaded.model.presence and loaded.info["presence"] is True
    assert "presence_loss" in (tmp_path / "run" / "train.csv").read_text().splitlines()[0]
    code, _, err = run_cli(["finetune", "--data", anatomy[0], "--splits", anatomy[1], "--out", tmp_path / "unet",
                            "--model", "unet", "--image-size", "64", "--presence"], capsys)
    assert code == 2 and "presence" in err and not (tmp_path / "unet").exists()


def test_bf16_precision_trains_and_is_recorded(anatomy, tmp_path, capsys):
    from samadapt.engine.checkpoint import load_training_state

    code, _, err = _finetune(*anatomy, tmp_path / "run", capsys, "--epochs", "1", "--precision", "bf16")
    assert code == 0, err
    assert read_json(tmp_path / "run" / "config.json")["precision"] == "bf16"
    _, meta = load_training_state(tmp_path / "run" / "checkpoints" / "best.pt")
    assert meta["trainer"]["precision"] == "bf16"
    assert torch.isfinite(torch.tensor(read_json(tmp_path / "run" / "summary.json")["last_train"]["loss"]))


@pytest.mark.parametrize("value, message", [("fp8", "--precision 'fp8'"), ("fp16", "fp16 needs a CUDA GPU")])
def test_impossible_precision_is_refused_before_any_work(value, message, anatomy, tmp_path, capsys):
    if value == "fp16" and torch.cuda.is_available():
        pytest.skip("fp16 is valid on a CUDA machine")
    code, _, err = _finetune(*anatomy, tmp_path / "run", capsys, "--epochs", "1", "--precision", value)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_same_seed_same_model_whatever_ran_before(anatomy, tmp_path, capsys):
    """--seed fixes the random initial weights too, so a run does not depend on what the process did
    before it (the demo fine-tunes after pre-training in the same process)."""
    from safetensors.torch import load_file

    weights = []
    for attempt in range(2):
        torch.randn(1000 * (attempt + 1))  # use up a different amount of the global RNG each time
        code, _, err = _finetune(*anatomy, tmp_path / f"run{attempt}", capsys, "--epochs", "1", "--seed", "3")
        assert code == 0, err
        weights.append(load_file(tmp_path / f"run{attempt}" / "model" / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
