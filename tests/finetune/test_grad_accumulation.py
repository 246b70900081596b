"""`--grad-accumulation N`: N batches of B train the same weights as one batch of N x B."""

from __future__ import annotations

import pytest
import torch

from samadapt.engine.checkpoint import load_training_state

from .conftest import read_json, run_cli

# 2 training images shown twice: 4 samples, one optimiser step either way; no augmentation, so the
# two runs see the same pixels in the same (seeded) order
TINY = ["--model", "sam2-hiera-tiny", "--image-size", "64", "--no-augment", "--repeat", "2", "--epochs", "1"]


def _weights(run) -> dict[str, torch.Tensor]:
    state, _ = load_training_state(run / "checkpoints" / "best.pt")
    return state["model"]


def test_two_accumulated_batches_of_2_equal_one_batch_of_4(anatomy, tmp_path, capsys):
    data, splits = anatomy
    runs = {}
    for name, options in (("big", ["--batch-size", "4"]), ("accumulated", ["--batch-size", "2", "--grad-accumulation", "2"])):
        run = tmp_path / name
        code, _, err = run_cli(["finetune", "--data", data, "--splits", splits, "--out", run, *TINY, *options], capsys)
        assert code == 0, err
        summary = read_json(run / "summary.json")
        assert summary["global_step"] == 1 and summary["global_batch_size"] == 4
        runs[name] = _weights(run)
    big, accumulated = runs["big"], runs["accumulated"]
    assert big.keys() == accumulated.keys()
    worst = max(float((big[k].float() - accumulated[k].float()).abs().max()) for k in big)
    assert worst < 1e-5, worst


def test_grad_accumulation_below_1_is_refused_naming_the_option(anatomy, tmp_path, capsys):
    data, splits = anatomy
    code, _, err = run_cli(["finetune", "--data", data, "--splits", splits, "--out", tmp_path / "run", *TINY,
                            "--grad-accumulation", "0"], capsys)
    assert code == 2 and "--grad-accumulation" in err
    assert not (tmp_path / "run").exists()


def test_runs_without_accumulation_store_the_settings_they_always_stored():
    from samadapt.errors import UserError
    from samadapt.finetune.config import FinetuneConfig
    from samadapt.pretrain.config import PretrainConfig

    # a changed accumulation is refused on resume through the trainer's own accumulate_steps
    assert "grad_accumulation" not in FinetuneConfig("d", "s", "o").run_settings()
    assert FinetuneConfig("d", "s", "o", grad_accumulation=2).run_settings()["grad_accumulation"] == 2
    assert "grad_accumulation" not in PretrainConfig(["d"], "o").resume_key()
    assert PretrainConfig(["d"], "o", grad_accumulation=3).resume_key()["grad_accumulation"] == 3
    with pytest.raises(UserError, match="--grad-accumulation"):
        PretrainConfig(["d"], "o", grad_accumulation=0).validate()
