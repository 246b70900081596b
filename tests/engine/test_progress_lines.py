"""What the training engine prints: one kept line per epoch, a note when stopping, the closing lines."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from samadapt.engine.callbacks import Callback
from samadapt.engine.logging import ItemProgress
from samadapt.engine.trainer import Reporting, TrainData, Trainer, Validation
from samadapt.outcome import OUTCOME_KEYS, finish_training

EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+)  loss \S+(  val Dice \d\.\d{4})?  \(\d+\.\d s\)$")


def _trainer(tmp_path, progress: bool, validation: Validation | None = None, callbacks=()) -> Trainer:
    torch.manual_seed(0)
    x = torch.randn(8, 3)
    model = nn.Linear(3, 1)

    def step(net, batch):
        inputs, targets = batch
        return nn.functional.mse_loss(net(inputs), targets), {}, inputs.shape[0]

    return Trainer(model, step, torch.optim.SGD(model.parameters(), lr=0.1),
                   TrainData(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4), run_dir=tmp_path,
                   validation=validation, reporting=Reporting(progress=progress, tensorboard=False,
                                                              handle_signals=False, callbacks=callbacks))


def test_each_epoch_leaves_one_kept_line_with_the_monitored_metric(tmp_path, capsys):
    scores = iter([0.5, 0.75])
    trainer = _trainer(tmp_path, True, Validation(lambda m: {"val_dice": next(scores)}, monitor="val_dice",
                                                  mode="max"))
    trainer.fit(2)
    lines = capsys.readouterr().err.strip().splitlines()
    assert [EPOCH_LINE.match(line).group(1, 2) for line in lines] == [("1", "2"), ("2", "2")], lines
    assert "val Dice 0.5000" in lines[0] and "val Dice 0.7500" in lines[1]


def test_library_use_without_progress_prints_nothing(tmp_path, capsys):
    _trainer(tmp_path, False).fit(2)
    assert capsys.readouterr() == ("", "")


class _StopAfterFirstStep(Callback):
    def on_step_end(self, trainer, step, metrics):
        trainer._stop.requested = True  # what SIGINT does: the next step's reduction sees it


def test_an_interrupted_run_says_it_is_saving(tmp_path, capsys):
    summary = _trainer(tmp_path, True, callbacks=[_StopAfterFirstStep()]).fit(5)
    assert summary["status"] == "interrupted"
    err = capsys.readouterr().err
    assert f"stopping at step {summary['global_step']}: saving a checkpoint to {tmp_path / 'checkpoints'}" in err


SUMMARY = {"status": "completed", "epochs_completed": 2, "global_step": 4, "seconds": 1.25,
           "best": {"metric": "val_dice", "value": 0.61234, "step": 4}, "last_train": {"loss": 0.5}}


@pytest.mark.parametrize("summary, status, best, next_command", [
    (SUMMARY, "completed (2/2 epochs, 4 steps, 1.2 s)", "val Dice 0.6123 at step 4", "samadapt evaluate --model r"),
    ({**SUMMARY, "status": "early_stopping"}, "stopped early (2/2 epochs, 4 steps, 1.2 s)", "val Dice 0.6123 at step 4",
     "samadapt evaluate --model r"),
    ({**SUMMARY, "status": "interrupted", "best": {"metric": None, "value": None, "step": None}},
     "interrupted (2/2 epochs, 4 steps, 1.2 s)", "final loss 0.5", "samadapt finetune --out r --resume"),
], ids=["completed", "stopped-early", "interrupted"])
def test_closing_lines_name_status_best_run_and_next(summary, status, best, next_command, monkeypatch, capsys):
    monkeypatch.setattr("samadapt.cli._INVOKED_ARGS", ["finetune", "--out", "r", "--debug"])
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    if summary["status"] == "interrupted":  # the closing lines, then exit 130 (the folder stays marked incomplete)
        import typer

        with pytest.raises(typer.Exit) as stopped:
            finish_training(summary, "r", ["evaluate", "--model", "r"], epochs=2)
        assert stopped.value.exit_code == 130
    else:
        finish_training(summary, "r", ["evaluate", "--model", "r"], epochs=2)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{k}: {v}" for k, v in zip(OUTCOME_KEYS, (status, best, "r", next_command))]


def test_only_rank_zero_prints_the_closing_lines(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    finish_training(SUMMARY, "r", ["evaluate"], epochs=2)
    assert capsys.readouterr().out == ""


def test_item_progress_keeps_lines_in_a_log_and_is_quiet_when_off(capsys):
    shown = ItemProgress(3, "caching features", every_s=0)  # stderr is no terminal here: lines, no bar
    hidden = ItemProgress(3, "caching features", enabled=False, every_s=0)
    for _ in range(3):
        shown.update(), hidden.update()
    shown.close(), hidden.close()
    assert capsys.readouterr().err.splitlines() == [f"caching features: {k}/3" for k in (1, 2, 3)]
