"""`samadapt pretrain`: a tiny run end to end, resume, the saved encoder, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from samadapt.cli import main
from samadapt.errors import UserError
from samadapt.pretrain.export import load_pretrained_encoder
from samadapt.pretrain.train import PretrainConfig, run_pretrain

TINY = ["--image-size", "64", "--batch-size", "2", "--warmup-epochs", "0", "--lr", "1e-3", "--recon-every", "1"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:80, :80]
    for i in range(4):
        image = 120 + 80 * np.sin(xx / (5 + i)) * np.cos(yy / 7) + rng.normal(0, 5, (80, 80))
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"p{i}.png")
    return folder


def _run(args, capsys) -> tuple[int, str, str]:
    code = main(["pretrain", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def finished_run(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "mae"
    config = PretrainConfig(data=[str(image_folder)], out=str(out), image_size=64, batch_size=2, epochs=1,
                            warmup_epochs=0, lr=1e-3, recon_every=1, command="samadapt pretrain (test)")
    summary = run_pretrain(config, progress=False)
    return out, summary


def test_run_writes_metrics_pictures_checkpoints_and_encoder(finished_run):
    out, summary = finished_run
    assert summary["status"] == "completed" and summary["global_step"] == 2
    assert (out / "train.csv").read_text().count("\n") == 3  # header + 2 steps
    picture = Image.open(out / "recon" / "epoch-0001.png")
    assert picture.size == (3 * 64, 3 * 64)  # original | masked | reconstruction; 3 images, one per row
    assert (out / "checkpoints" / "latest").is_file()
    assert Image.open(out / "curves.png").size[0] > 0  # the loss curve, drawn when training ends
    meta = json.loads((out / "encoder" / "samadapt.json").read_text())
    provenance = meta["provenance"]
    assert provenance["mask_ratio"] == 0.75 and provenance["image_size"] == 64
    assert provenance["epochs_completed"] == 1 and provenance["data"]
    calibration = provenance["neck_calibration"]  # random init: the untrained neck was calibrated
    assert calibration["images"] == 4 and abs(calibration["std_after"] - 1) < 1e-2


def test_saved_encoder_loads_into_a_fresh_model(finished_run):
    from samadapt.engine.checkpoint import load_resumable
    from samadapt.modeling.registry import build_model

    out, _ = finished_run
    state, provenance = load_pretrained_encoder(out)
    assert provenance["model"] == "sam2-hiera-tiny" and provenance["stage"] == "mae-pretrain"
    fresh = build_model("sam2-hiera-tiny", image_size=128)  # another size: Hiera weights are size-free
    fresh.image_encoder.load_state_dict(state)  # strict
    trained, _, _ = load_resumable(out / "checkpoints")
    trunk_state = {k[len("trunk."):]: v for k, v in trained["model"].items() if k.startswith("trunk.")}
    for key, value in fresh.trunk.state_dict().items():
        assert torch.equal(value, trunk_state[key]), key


def test_resume_continues_and_refuses_another_config(finished_run, image_folder, capsys):
    out, _ = finished_run
    base = ["--data", str(image_folder), "--out", str(out), *TINY]
    code, _, err = _run([*base, "--epochs", "1", "--mask-ratio", "0.5", "--resume"], capsys)
    assert code == 2 and "mask_ratio" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run([*base, "--epochs", "1"], capsys)  # existing run without --resume
    assert code == 2 and "resume" in err
    code, stdout, _ = _run([*base, "--epochs", "2", "--resume"], capsys)
    assert code == 0 and "status: completed (2/2 epochs, 4 steps" in stdout
    assert json.loads((out / "summary.json").read_text())["global_step"] == 4


def test_resume_refuses_other_images_and_changes_nothing(finished_run, image_folder, tmp_path, capsys):
    import shutil

    out, _ = finished_run
    changed = tmp_path / "images"
    shutil.copytree(image_folder, changed)
    shutil.copy(changed / "p0.png", changed / "p9.png")  # one image more than the run started with
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file())
    code, _, err = _run(["--data", str(changed), "--out", str(out), *TINY, "--epochs", "3", "--resume"], capsys)
    assert code == 2 and "images found (5) are not the 4" in err and len(err.strip().splitlines()) == 1
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()) == before


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--mask-ratio", "0"], "mask-ratio"),
        (["--mask-ratio", "1.2"], "mask-ratio"),
        (["--image-size", "80"], "80"),
        (["--image-size", "16"], "smaller than one mask unit"),
        (["--path", "fast"], "--path"),
    ],
)
def test_bad_values_are_one_line_user_errors(image_folder, tmp_path, capsys, extra, message):
    code, _, err = _run(["--data", str(image_folder), "--out", str(tmp_path / "r"), *TINY, *extra], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_no_images_found(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = _run(["--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r"), *TINY], capsys)
    assert code == 2 and "no images found" in err and str(tmp_path / "empty") in err


def test_image_smaller_than_a_unit(tmp_path, capsys):
    Image.fromarray(np.zeros((20, 40), np.uint8)).save(tmp_path / "tiny.png")
    code, _, err = _run(["--data", str(tmp_path / "tiny.png"), "--out", str(tmp_path / "r"), *TINY,
                         "--batch-size", "1"], capsys)
    assert code == 2 and "tiny.png" in err and "mask unit" in err


def test_missing_run_for_export_is_user_error(tmp_path):
    with pytest.raises(UserError, match="not a pre-training run"):
        load_pretrained_encoder(tmp_path)


@pytest.mark.parametrize("init", ["ckpt:{run}/encoder", "mae:{run}"])
def test_init_from_saved_weights_starts_from_them(finished_run, image_folder, tmp_path, init):
    """--init ckpt:DIR / mae:RUN_DIR: the trunk starts from those weights (here another run's encoder)."""
    from samadapt.modeling.loading import load_model_folder
    from samadapt.pretrain.train import build_mae

    out, _ = finished_run
    config = PretrainConfig(data=[str(image_folder)], out=str(tmp_path / "r"), image_size=64, batch_size=2,
                            epochs=1, warmup_epochs=0, init=init.format(run=out))
    model, mae = build_mae(config)
    saved = load_model_folder(out / "encoder").model
    for key, value in saved.trunk.state_dict().items():
        assert torch.equal(value, mae.trunk.state_dict()[key]), key
    with pytest.raises(UserError, match="--init .*: use random, sam2:PATH"):  # a bare path is not the grammar
        build_mae(PretrainConfig(data=[str(image_folder)], out=str(tmp_path / "r"), init=str(out / "encoder")))
    with pytest.raises(UserError, match="weights file not found"):
        build_mae(PretrainConfig(data=[str(image_folder)], out=str(tmp_path / "r"), init=f"sam2:{tmp_path / 'none'}"))


def test_encoder_of_an_unfinished_run_is_refused_unless_asked_for(image_folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "stopped"
    config = PretrainConfig(data=[str(image_folder)], out=str(out), image_size=64, batch_size=2, epochs=3,
                            warmup_epochs=0, lr=1e-3, recon_every=0)
    assert run_pretrain(config, progress=False, max_steps=1)["status"] == "max_steps"  # stopped like a Ctrl-C
    monkeypatch.delenv("SAMADAPT_ALLOW_UNFINISHED", raising=False)
    with pytest.raises(UserError, match="did not complete .*status max_steps, 0 of 3 epochs.*SAMADAPT_ALLOW_UNFINISHED=1"):
        load_pretrained_encoder(out)
    capsys.readouterr()
    monkeypatch.setenv("SAMADAPT_ALLOW_UNFINISHED", "1")
    state, provenance = load_pretrained_encoder(out)
    assert state and provenance["status"] == "max_steps"
    assert "unfinished pre-training run" in capsys.readouterr().err


def test_default_warmup_fits_a_short_run():
    """The default warm-up (5 epochs) is cut to the run's length, so `--epochs 1` is valid as it stands."""
    short = PretrainConfig(data=["x"], out="o", epochs=1)
    short.validate()
    assert short.warmup() == 1
    assert PretrainConfig(data=["x"], out="o", epochs=100).warmup() == 5
    assert PretrainConfig(data=["x"], out="o", epochs=3, warmup_epochs=0).warmup() == 0
    with pytest.raises(UserError, match="--warmup-epochs must be in"):
        PretrainConfig(data=["x"], out="o", epochs=1, warmup_epochs=2).validate()


def test_raw_pixel_targets_are_chosen_on_the_command_line(image_folder, tmp_path, capsys):
    out = tmp_path / "raw"
    code, _, err = _run(["--data", str(image_folder), "--out", str(out), *TINY, "--epochs", "1", "--no-norm-pix"], capsys)
    assert code == 0, err
    provenance = json.loads((out / "encoder" / "samadapt.json").read_text())["provenance"]
    assert provenance["norm_pix"] is False
