"""`samadapt finetune-memory`: SAM2's memory path trained on clips of consecutive slices (tiny 3D
phantoms at 64 px, random weights). The training forward is the propagation forward; a few steps
on two volumes lower the loss clearly; a run resumes, and `propagate` loads its model strictly."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from .conftest import _same_train_val_split, read_json, run_cli

SIZE = 64


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset.yaml, splits.json): 2 anatomy volumes 40x40x8 (3 classes), train = val."""
    from samadapt.data.phantoms import generate_phantoms

    root = tmp_path_factory.mktemp("memory")
    description = generate_phantoms(root / "data", n=2, size=40, seed=0, kind="anatomy", dims="3d", depth=8)
    return description, _same_train_val_split(description, ["A0001", "A0002"], root / "splits.json")


def test_clip_slices_run_from_the_key_slice_and_turn_at_the_end():
    from samadapt.finetune.memory_clips import clip_slices

    assert clip_slices(2, 1, 4, 10) == [2, 3, 4, 5]
    assert clip_slices(2, -1, 4, 10) == [2, 3, 4, 5]  # not enough room backward: forward instead
    assert clip_slices(8, 1, 4, 10) == [8, 7, 6, 5]
    assert clip_slices(1, 1, 8, 3) == [1, 2]  # neither way has 8: the longer one


def test_the_training_forward_is_the_propagation_forward():
    """Gradients flow through exactly what `samadapt propagate` computes (forward from a mask)."""
    import torch.nn.functional as F

    from samadapt.inference.propagate import FramePrompt, propagate
    from samadapt.modeling.memory_training import ClipPrompt, MemoryPathTrainer
    from samadapt.modeling.sam2_video import build_memory_model

    torch.manual_seed(0)
    model = build_memory_model("sam2.1-hiera-tiny", SIZE)
    with torch.no_grad():  # random weights: keep the object present so that every frame is tracked
        model.hf.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(5.0)
    frames = torch.randn(5, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(SIZE, SIZE)
    mask[20:40, 15:35] = 1
    expected = {r.frame: r for r in propagate(model.hf, list(frames), [FramePrompt(1, 0, mask=mask)],
                                              stop_when_absent=False)}
    out = MemoryPathTrainer(model.hf).track(frames, ClipPrompt(mask=mask))
    assert out.logits.shape == (5, SIZE, SIZE) and out.logits.requires_grad
    for t in range(1, 5):
        up = F.interpolate(expected[t].logits[None, None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out.logits[t].detach(), up[0, 0], rtol=1e-5, atol=1e-5)
        assert abs(float(out.scores[t].detach()) - expected[t].score) < 1e-5


def test_a_few_steps_on_two_volumes_lower_the_loss_clearly(volumes, tmp_path):
    from samadapt.finetune.losses import parse_loss
    from samadapt.finetune.memory_config import MemoryTrainConfig
    from samadapt.finetune.memory_training import _prepare_clips, build_memory_trainer_model, memory_step_fn

    config = MemoryTrainConfig(data=str(volumes[0]), splits=str(volumes[1]), out=str(tmp_path / "run"),
                               image_size=SIZE, clip_length=3)
    _, _, fixed = _prepare_clips(config)
    torch.manual_seed(0)
    model, _, _ = build_memory_trainer_model(config)
    assert model.trainable_counts()["frozen"] > 0
    frozen = {n: p.detach().clone() for n, p in model.hf.named_parameters() if n.startswith("vision_encoder.")}
    step = memory_step_fn(parse_loss("dice+bce"), "mask")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batch = [fixed[0], fixed[3]]  # one object of each volume
    losses = []
    for _ in range(10):
        loss, metrics, n = step(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(metrics["mask_loss"])
    # the first step only tames the random decoder's huge logits; the rest is learning the masks
    assert losses[-1] < 0.8 * losses[1] and losses[-1] < 0.1 * losses[0], losses
    assert all(torch.equal(p, frozen[n]) for n, p in model.hf.named_parameters() if n in frozen)


def _train(volumes, run: Path, capsys, *extra: str):
    return run_cli(["finetune-memory", "--data", volumes[0], "--splits", volumes[1], "--out", run,
                    "--image-size", SIZE, "--clip-length", "3", "--batch-size", "3", "--lr", "1e-3",
                    "--threads", "1", *extra], capsys)


def test_a_run_resumes_and_propagate_loads_its_model(volumes, tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = _train(volumes, run, capsys, "--epochs", "1")
    assert code == 0, err
    assert "next: samadapt propagate --init ckpt:" in out
    code, _, err = _train(volumes, run, capsys, "--epochs", "1")
    assert code == 2 and "--resume" in err  # never silently overwrite a run
    code, _, err = _train(volumes, run, capsys, "--epochs", "2", "--resume")
    assert code == 0, err
    summary = read_json(run / "summary.json")
    assert summary["epochs_completed"] == 2 and summary["resumed_from"]
    assert summary["global_step"] == 4  # 6 clips (2 volumes x 3 classes) in batches of 3, 2 epochs
    steps = [int(line.split(",")[0]) for line in (run / "train.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3, 4]  # the resumed session continued the log, no step twice

    from samadapt.modeling.sam2_video import load_memory_model

    loaded = load_memory_model(weights=run / "model")  # strict: every key of the video model
    assert (loaded.name, loaded.image_size) == ("sam2.1-hiera-tiny", SIZE)
    from samadapt.modeling.loading import load_model

    image_model = load_model(weights=run / "model")  # a few-shot cache takes the image half
    trained = loaded.hf.mask_decoder.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in image_model.hf.mask_decoder.state_dict().items())

    image = Path(volumes[0]).parent / "images" / "A0001.nii.gz"
    labels = np.asarray(nib.load(str(Path(volumes[0]).parent / "masks" / "A0001.nii.gz")).dataobj).astype(np.uint8)
    key = np.zeros_like(labels)
    key[..., 4] = labels[..., 4]
    nib.save(nib.Nifti1Image(key, np.eye(4)), tmp_path / "key.nii.gz")
    code, _, err = run_cli(["propagate", "--input", image, "--labels", tmp_path / "key.nii.gz",
                            "--out", tmp_path / "seg.nii.gz", "--init", f"ckpt:{run}"], capsys)
    assert code == 0, err
    assert np.asarray(nib.load(str(tmp_path / "seg.nii.gz")).dataobj).shape == labels.shape


def test_a_box_prompted_clip_is_scored_on_its_key_slice_too(volumes, tmp_path):
    from samadapt.finetune.losses import parse_loss
    from samadapt.finetune.memory_config import MemoryTrainConfig
    from samadapt.finetune.memory_training import _prepare_clips, build_memory_trainer_model, memory_step_fn

    config = MemoryTrainConfig(data=str(volumes[0]), splits=str(volumes[1]), out=str(tmp_path / "run"),
                               image_size=SIZE, clip_length=2, prompt="box")
    _, train, _ = _prepare_clips(config)
    item = train[0]
    assert item["points"].shape == (2, 2) and item["labels"].tolist() == [2, 3] and "mask" not in item
    model, _, _ = build_memory_trainer_model(config)
    loss, _, _ = memory_step_fn(parse_loss("dice+bce"), "box")(model, [item])
    loss.backward()
    assert torch.isfinite(loss)
    # the box goes through the decoder on the key slice, from features without memory
    assert model.hf.no_memory_embedding.grad is not None


def test_an_mae_run_starts_the_memory_model_with_its_encoder(volumes, tmp_path, capsys):
    """MAE-SAM2 with a memory: the MAE run's encoder under a random memory half, of the MAE run's
    variant unless --model says otherwise; the image encoder stays frozen through memory training,
    so the run's model holds it exactly."""
    from samadapt.modeling.model_folder import read_metadata, save_model_folder
    from samadapt.modeling.registry import build_model
    from samadapt.modeling.sam2_video import load_memory_model

    pretrained = build_model("sam2-hiera-tiny", SIZE)  # `samadapt pretrain`'s default, not the memory default
    with torch.no_grad():
        for param in pretrained.image_encoder.parameters():
            param.add_(0.5)  # recognisably different from any fresh initialisation
    save_model_folder(pretrained, tmp_path / "mae" / "encoder", {"command": "pretrain", "model": "sam2-hiera-tiny"})
    run = tmp_path / "run"
    code, _, err = _train(volumes, run, capsys, "--epochs", "1", "--init", f"mae:{tmp_path / 'mae'}")
    assert code == 0, err
    assert read_metadata(run / "model")["model"] == "sam2-hiera-tiny"
    trained = load_memory_model(weights=run / "model")
    expected = pretrained.image_encoder.state_dict()
    for key, value in trained.hf.vision_encoder.state_dict().items():
        torch.testing.assert_close(value, expected[key])
    assert read_json(run / "summary.json")["status"] == "completed"

    code, _, err = _train(volumes, tmp_path / "other", capsys, "--epochs", "1", "--init", f"mae:{tmp_path / 'mae'}",
                          "--model", "sam2.1-hiera-tiny")
    assert code == 2 and "pre-trained encoder is sam2-hiera-tiny but --model is sam2.1-hiera-tiny" in err


@pytest.mark.slow
def test_two_processes_take_the_step_one_process_takes_with_both_halves(volumes, tmp_path, capfd, monkeypatch):
    """`--devices 2` with 3 clips per process = one process with all 6 clips: the same averaged
    gradient, so the same weights after the step (up to the order of float sums)."""
    from safetensors.torch import load_file

    from samadapt.cli import main

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    base = ["finetune-memory", "--data", str(volumes[0]), "--splits", str(volumes[1]), "--image-size", str(SIZE),
            "--clip-length", "3", "--lr", "1e-3", "--epochs", "1", "--keep", "last"]
    assert main([*base, "--batch-size", "3", "--devices", "2", "--out", str(tmp_path / "two")]) == 0, capfd.readouterr().err
    assert main([*base, "--batch-size", "6", "--out", str(tmp_path / "one")]) == 0, capfd.readouterr().err
    two, one = (read_json(tmp_path / name / "summary.json") for name in ("two", "one"))
    assert two["global_step"] == one["global_step"] == 1 and two["global_batch_size"] == one["global_batch_size"] == 6
    weights = [load_file(tmp_path / name / "model" / "model.safetensors") for name in ("two", "one")]
    assert weights[0].keys() == weights[1].keys()
    for key, value in weights[1].items():
        torch.testing.assert_close(weights[0][key], value, rtol=1e-4, atol=1e-5)

    from samadapt.engine.distributed import seed_everything
    from samadapt.finetune.memory_config import MemoryTrainConfig
    from samadapt.finetune.memory_training import build_memory_trainer_model

    seed_everything(0)  # the runs' starting weights: the step moved the memory path away from them
    _, start, _ = build_memory_trainer_model(MemoryTrainConfig(data="", splits="", out="", image_size=SIZE))
    key = "memory_attention.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(start.hf.state_dict()[key], weights[1][key], atol=1e-6)
