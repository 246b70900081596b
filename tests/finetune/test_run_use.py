"""Using a fine-tuned run: `samadapt evaluate --model RUN_DIR` and `samadapt predict --model RUN_DIR`."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from .conftest import read_json, run_cli


@pytest.fixture(scope="module")
def tiny_run(anatomy, tmp_path_factory):
    from samadapt.cli import main

    run = tmp_path_factory.mktemp("run") / "run"
    data, split = anatomy
    code = main(["finetune", "--data", str(data), "--splits", str(split), "--out", str(run), "--image-size", "64",
                 "--epochs", "1", "--batch-size", "2", "--no-augment"])
    assert code == 0
    return run


def test_evaluate_a_run_on_its_validation_cases(tiny_run, anatomy, tmp_path, capsys):
    code, out, err = run_cli(["evaluate", "--model", tiny_run, "--data", anatomy[0], "--part", "val",
                              "--out", tmp_path / "eval"], capsys)
    assert code == 0, err
    assert "evaluated 2 cases (3 classes)" in out
    summary = read_json(tmp_path / "eval" / "summary.json")
    assert summary["classes"] == ["left_lobe", "right_lobe", "core"] and summary["n_cases"] == 2
    per_case = (tmp_path / "eval" / "per_case.csv").read_text().splitlines()
    assert len(per_case) == 1 + 2 * 3  # header + cases x classes


@pytest.mark.parametrize("args, message", [
    (["--part", "test"], "no labelled cases"),
    (["--part", "val", "--fold", "4"], "--fold 4"),
    (["--part", "holdout"], "holdout"),
])
def test_evaluate_a_run_refuses_bad_input(tiny_run, anatomy, tmp_path, capsys, args, message):
    code, _, err = run_cli(["evaluate", "--model", tiny_run, "--data", anatomy[0], *args, "--out", tmp_path / "e"], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_evaluate_refuses_classes_the_run_lacks(tiny_run, tmp_path, capsys):
    from samadapt.data.phantoms import generate_phantoms

    fa = generate_phantoms(tmp_path / "fa", n=4, size=64, kind="fa")
    code, _, err = run_cli(["evaluate", "--model", tiny_run, "--data", fa, "--part", "val", "--out", tmp_path / "e"], capsys)
    assert code == 2 and "leakage" in err


def test_predict_writes_index_masks_at_input_size(tiny_run, tmp_path, capsys):
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray((np.random.default_rng(0).random((50, 70)) * 255).astype(np.uint8)).save(images / "a.png")
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(images / "b.jpg")
    code, out, err = run_cli(["predict", "--model", tiny_run, "--input", images, "--out", tmp_path / "out"], capsys)
    assert code == 0, err
    mask = np.array(Image.open(tmp_path / "out" / "a_mask.png"))
    assert mask.shape == (50, 70) and mask.max() <= 3
    assert (tmp_path / "out" / "b_overlay.png").is_file()
    assert read_json(tmp_path / "out" / "classes.json")["3"] == "core"
    code, _, err = run_cli(["predict", "--model", tiny_run, "--input", images, "--out", tmp_path / "o2",
                            "--box", "1", "1", "5", "5"], capsys)
    assert code == 2 and "without prompts" in err


def test_predict_with_a_run_uses_the_fast_encoder_options(tiny_run, tmp_path, capsys, monkeypatch):
    """--fast/--precision reach a fine-tuned SAM2 run's encoder (they were once ignored for runs)."""
    import samadapt.modeling.fast as fast

    seen = []
    real = fast.accelerate
    monkeypatch.setattr(fast, "accelerate", lambda model, **kw: seen.append(kw) or real(model, **kw))
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(images / "a.png")
    code, _, err = run_cli(["predict", "--model", tiny_run, "--input", images, "--out", tmp_path / "bf16",
                            "--precision", "bf16"], capsys)
    assert code == 0, err
    assert seen == [{"fast": True, "compile": False, "precision": "bf16"}]
    code, _, err = run_cli(["predict", "--model", tiny_run, "--input", images, "--out", tmp_path / "plain",
                            "--no-fast"], capsys)
    assert code == 0, err
    assert seen[-1]["fast"] is False
