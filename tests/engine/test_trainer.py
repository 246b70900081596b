"""The Trainer in-process: accumulation, early stopping, refusals, callbacks, summary."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from samadapt.engine.callbacks import Callback
from samadapt.engine.checkpoint import load_training_state
from samadapt.engine.trainer import Checkpoints, Reporting, Schedule, TrainData, Trainer, Validation
from samadapt.errors import UserError


def _data(n: int = 16) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    return TensorDataset(x, x.sum(dim=1, keepdim=True))


def _step(model, batch):
    x, y = batch
    loss = nn.functional.mse_loss(model(x), y)
    return loss, {}, x.shape[0]


QUIET = Reporting(progress=False, tensorboard=False, handle_signals=False)


def _trainer(tmp_path, model=None, step_fn=_step, batch_size=4, reporting=QUIET, **groups):
    torch.manual_seed(0)
    model = model or nn.Linear(3, 1)
    return Trainer(model, step_fn, torch.optim.SGD(model.parameters(), lr=0.1), TrainData(_data(), batch_size),
                   run_dir=tmp_path, reporting=reporting, **groups)


def test_accumulation_matches_one_big_batch(tmp_path):
    big = _trainer(tmp_path / "big", batch_size=4)
    small = _trainer(tmp_path / "small", batch_size=2, schedule=Schedule(accumulate_steps=2))
    assert big.steps_per_epoch == small.steps_per_epoch == 4
    big.fit(2), small.fit(2)
    assert torch.allclose(big.model.weight, small.model.weight, atol=1e-6)
    assert small.global_batch_size == 4


def test_uneven_accumulation_tail_is_a_full_step(tmp_path):
    trainer = _trainer(tmp_path, batch_size=4, schedule=Schedule(accumulate_steps=3))  # 4 batches: groups of 3 and 1
    summary = trainer.fit(1)
    assert trainer.steps_per_epoch == 2 and summary["global_step"] == 2


def test_early_stopping_keeps_the_best_weights(tmp_path):
    scores = iter([3.0, 2.0, 2.5, 2.6, 2.7, 9.0])
    trainer = _trainer(tmp_path, validation=Validation(lambda m: {"val": next(scores)}, monitor="val", patience=2))
    summary = trainer.fit(10)
    assert summary["status"] == "early_stopping" and summary["epochs_completed"] == 4
    assert summary["best"] == {"metric": "val", "value": 2.0, "step": 8}
    best, _ = load_training_state(tmp_path / "checkpoints" / "best.pt")
    assert best["metrics"] == {"val": 2.0}
    rows = trainer.logger.rows("epoch")
    assert [r["val"] for r in rows] == ["3.0", "2.0", "2.5", "2.6"]


def test_validation_every_n_steps_and_max_steps(tmp_path):
    calls = []
    trainer = _trainer(tmp_path, validation=Validation(lambda m: calls.append(m.training) or {"v": 1.0}, every_steps=3))
    summary = trainer.fit(5, max_steps=7)
    assert summary["status"] == "max_steps" and summary["global_step"] == 7
    assert calls == [False, False]  # eval mode during validation, at steps 3 and 6
    assert [r["step"] for r in trainer.logger.rows("validation")] == ["3", "6"]


def test_callbacks_see_every_step_and_epoch(tmp_path):
    seen = []

    class Spy(Callback):
        def on_step_end(self, trainer, step, metrics):
            seen.append(("step", step, "images_per_s" in metrics))

        def on_epoch_end(self, trainer, epoch, metrics):
            seen.append(("epoch", epoch, "loss" in metrics))

        def on_fit_end(self, trainer, summary):
            seen.append(("end", summary["status"], True))

    _trainer(tmp_path, reporting=Reporting(progress=False, tensorboard=False, handle_signals=False,
                                          callbacks=[Spy()])).fit(1)
    assert seen == [("step", 1, True), ("step", 2, True), ("step", 3, True), ("step", 4, True),
                    ("epoch", 0, True), ("end", "completed", True)]


def test_new_run_into_a_folder_with_checkpoints_is_refused(tmp_path):
    _trainer(tmp_path).fit(1)
    with pytest.raises(UserError, match="already holds checkpoints") as info:
        _trainer(tmp_path).fit(1)
    assert str(tmp_path) in str(info.value)


def test_resume_without_checkpoints_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no complete checkpoint"):
        _trainer(tmp_path, checkpoints=Checkpoints(resume=True)).fit(1)


def test_nan_loss_is_a_user_error_naming_the_step(tmp_path):
    def nan_step(model, batch):
        loss, metrics, n = _step(model, batch)
        return loss * float("nan"), metrics, n

    with pytest.raises(UserError, match="became nan at step 1"):
        _trainer(tmp_path, step_fn=nan_step).fit(1)


@pytest.mark.parametrize("bad, message", [
    (lambda: {"schedule": Schedule(accumulate_steps=0)}, "accumulation"),
    (lambda: {"batch_size": 0}, "batch size"),
    (lambda: {"batch_size": 64}, "larger than"),
    (lambda: {"validation": Validation(monitor="val")}, "validation function"),
    (lambda: {"validation": Validation(lambda m: {}, monitor="val", mode="up")}, "monitor mode"),
    (lambda: {"schedule": Schedule(precision="fp8")}, "precision"),
])
def test_bad_settings_are_user_errors(tmp_path, bad, message):
    with pytest.raises(UserError, match=message):
        _trainer(tmp_path, **bad())


def test_precision_on_cpu_is_fp32_unless_bf16_is_asked_for():
    from samadapt.engine.callbacks import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == (None, False)
    assert resolve_precision("fp32", cpu) == (None, False)
    assert resolve_precision("bf16", cpu) == (torch.bfloat16, False)
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cpu)


def test_auto_precision_on_a_gpu_without_bf16_says_it_trains_in_fp32(monkeypatch, capsys):
    from samadapt.engine.callbacks import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    gpu = torch.device("cuda")
    assert resolve_precision("auto", gpu) == (None, False)
    assert capsys.readouterr().err == ""  # the early check of a command stays quiet; the trainer says it
    assert resolve_precision("auto", gpu, announce=True) == (None, False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no bf16" in err[0] and "fp32" in err[0]


def test_bf16_autocast_reaches_the_step_function(tmp_path):
    seen = []

    def step(model, batch):
        x, y = batch
        out = model(x)
        seen.append(out.dtype)
        return torch.nn.functional.mse_loss(out.float(), y), {}, x.shape[0]

    _trainer(tmp_path, step_fn=step, schedule=Schedule(precision="bf16")).fit(1)
    assert seen and set(seen) == {torch.bfloat16}


def test_checkpoints_every_n_epochs_and_always_the_last(tmp_path):
    trainer = _trainer(tmp_path, checkpoints=Checkpoints(every_epochs=2, keep_last=10))
    saved = []
    real = trainer.save_checkpoint
    trainer.save_checkpoint = lambda: saved.append(trainer.epoch) or real()
    trainer.fit(5)
    assert saved == [2, 4, 5]  # epochs completed at each save; the 5th saved by fit's end
    assert len(list((tmp_path / "checkpoints").glob("ckpt-*.pt"))) == 3
