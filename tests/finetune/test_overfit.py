"""Tiny fine-tunes that must fit two phantom images (train = validation): the training path works."""

from __future__ import annotations

import pytest

from .conftest import read_json, run_cli


def _fit(anatomy, out, capsys, *args):
    data, split = anatomy
    code, _, err = run_cli(["finetune", "--data", data, "--splits", split, "--out", out, "--batch-size", "2",
                            "--no-augment", "--seed", "0", *args], capsys)
    assert code == 0, err
    return read_json(out / "summary.json")


@pytest.mark.slow
def test_unet_baseline_overfits_two_images(anatomy, tmp_path, capsys):
    summary = _fit(anatomy, tmp_path / "unet", capsys, "--model", "unet", "--train", "all", "--image-size", "128",
                   "--epochs", "12", "--repeat", "8", "--lr", "3e-3")
    assert summary["best"]["value"] > 0.9


@pytest.mark.slow
def test_sam2_class_prompts_overfit_two_images(anatomy, tmp_path, capsys):
    # Even with a random (frozen) encoder, the class prompts and mask decoder fit two images.
    summary = _fit(anatomy, tmp_path / "sam", capsys, "--model", "sam2-hiera-tiny", "--train", "decoder",
                   "--image-size", "128", "--epochs", "2", "--repeat", "50", "--lr", "3e-3")
    assert summary["best"]["value"] > 0.9


def test_attention_unet_trains_through_the_same_command(anatomy, tmp_path, capsys):
    from samadapt.finetune.runs import load_finetune_run

    _fit(anatomy, tmp_path / "att", capsys, "--model", "attention-unet", "--train", "all", "--image-size", "64",
         "--epochs", "1")
    run = load_finetune_run(tmp_path / "att")
    assert run.model.name == "attention-unet" and run.info["loss"] == "dice+bce"
