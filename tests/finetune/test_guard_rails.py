"""Small-data guard rails of fine-tuning: a run that learned nothing says so."""

from __future__ import annotations

import json

import pytest

from samadapt.finetune import training


def test_a_best_val_dice_of_zero_is_named_and_any_other_is_not():
    assert "nothing learned" in training.learning_warnings({"best": {"value": 0.0, "step": 3}})[0]
    assert training.learning_warnings({"best": {"value": 0.01, "step": 3}}) == []
    assert training.learning_warnings({"best": {"value": None, "step": None}}) == []


@pytest.mark.slow
def test_a_run_whose_val_dice_stays_zero_ends_with_a_warning(anatomy, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(training, "validation_dice", lambda *args, **kwargs: {training.VAL_METRIC: 0.0})
    # data, splits, out are given by position: the names of the first fields are not what is tested
    config = training.FinetuneConfig(str(anatomy[0]), str(anatomy[1]), str(tmp_path / "run"), model="unet",
                                     train="all", image_size=64, epochs=1, batch_size=1, progress=False)
    result = training.finetune(config)
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "nothing learned" in err[-1]
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["warnings"] == result["warnings"] and len(saved["warnings"]) == 1
