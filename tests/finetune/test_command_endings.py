"""Every training command ends the same way (status, best, run folder, next command) and keeps one
line per epoch on stderr; tiny runs (64 px, 2 epochs) of each."""

from __future__ import annotations

import re
import shlex

import pytest

from .conftest import read_json, run_cli

EPOCH_LINE = re.compile(r"^epoch (\d+)/2  loss \S+(  val Dice \d\.\d{4})?  \(\d+\.\d s\)$")
TWO_EPOCHS = ["--image-size", "64", "--epochs", "2"]
UNET = ["--model", "unet", "--train", "all", "--batch-size", "2"]


@pytest.fixture(scope="module")
def feature_cache(anatomy, tmp_path_factory):
    from samadapt.data.dataset import load_dataset
    from samadapt.fewshot.cache import build_cache

    out = tmp_path_factory.mktemp("endings") / "cache"
    build_cache(load_dataset(anatomy[0]).cases, out, "sam2-hiera-tiny", None, 64)
    return out


def _pretrain(anatomy, run, _):
    images = anatomy[0].parent / "images"
    return ["pretrain", "--data", images, "--out", run, *TWO_EPOCHS, "--batch-size", "2", "--warmup-epochs", "0",
            "--recon-every", "0"]


def _finetune(anatomy, run, _):
    return ["finetune", "--data", anatomy[0], "--splits", anatomy[1], "--out", run, *TWO_EPOCHS, *UNET]


def _ablate(anatomy, run, _):
    return ["ablate-loss", "--data", anatomy[0], "--splits", anatomy[1], "--out", run, "--losses", "dice",
            *TWO_EPOCHS, *UNET]


def _fewshot(anatomy, run, cache):
    return ["fewshot", "train", "--data", anatomy[0], "--cache", cache, "--out", run, "--shots", "2", *TWO_EPOCHS[2:]]


# command, its arguments, how "best" reads, what "next" starts with, whether epochs show val Dice
ENDINGS = [
    ("pretrain", _pretrain, "final loss ", "samadapt finetune --data LABELLED_DATA --splits SPLITS_JSON --init mae:{run}",
     False),
    ("finetune", _finetune, "val Dice ", "samadapt evaluate --model {run} --data {data} --splits {splits} --part val",
     True),
    ("ablate-loss", _ablate, "dice Dice ", "samadapt finetune --data {data} --splits {splits} --loss dice --model unet",
     True),
    ("fewshot-train", _fewshot, "final loss ", "samadapt fewshot predict --model {run} --input IMAGES", False),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, arguments, best, next_start, validates", ENDINGS, ids=[e[0] for e in ENDINGS])
def test_training_commands_end_with_the_shared_summary(name, arguments, best, next_start, validates, anatomy,
                                                       tmp_path, request, capsys):
    run = tmp_path / "run"
    cache = request.getfixturevalue("feature_cache") if name == "fewshot-train" else None
    code, out, err = run_cli(arguments(anatomy, run, cache), capsys)
    assert code == 0, err
    keys = [line.split(": ", 1) for line in out.strip().splitlines()[-4:]]
    assert [k for k, _ in keys] == ["status", "best", "run", "next"], out
    closing = dict(keys)
    assert closing["status"].startswith("completed (") and closing["run"] == str(run)
    assert closing["best"].startswith(best), closing["best"]
    expected = next_start.format(run=run, data=anatomy[0], splits=anatomy[1])
    assert closing["next"].startswith(expected), closing["next"]
    shlex.split(closing["next"])  # one command line the shell can read
    epochs = [EPOCH_LINE.match(line) for line in err.splitlines() if line.startswith("epoch ")]
    assert [m.group(1) for m in epochs if m] == ["1", "2"] and all(epochs), err
    assert all(bool(m.group(2)) == validates for m in epochs), err
    if name != "ablate-loss":  # the machine-readable form of the same ending
        assert read_json(run / "summary.json")["status"] == "completed"


def test_an_interrupted_ablation_writes_no_table_and_says_how_to_continue(anatomy, tmp_path, monkeypatch, capsys):
    from samadapt.finetune import training

    monkeypatch.setattr(training, "finetune", lambda config: {"status": "interrupted"})  # as after Ctrl-C
    out = tmp_path / "ablation"
    args = ["ablate-loss", "--data", anatomy[0], "--splits", anatomy[1], "--out", out, "--losses", "dice,bce",
            *TWO_EPOCHS, *UNET]
    code, stdout, err = run_cli(args, capsys)
    assert code == 130, err  # as the shell reports Ctrl-C
    closing = dict(line.split(": ", 1) for line in stdout.strip().splitlines()[-4:])
    assert closing["status"] == "interrupted" and closing["best"] == "none (no loss scored)"
    assert shlex.split(closing["next"]) == ["samadapt", *map(str, args)]  # running it again resumes
    assert "loss 1/2: training dice" in err and "loss 2/2" not in err
    assert not (out / "ablation.md").exists()


def test_a_run_interrupted_before_counts_as_unfinished(tmp_path):
    import json

    from samadapt.finetune.ablation import finished

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "samadapt.json").write_text("{}")
    (tmp_path / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    assert not finished(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"status": "early_stopping"}))
    assert finished(tmp_path)
