"""Checkpoint files: complete or absent, verified by hash, and never able to run code on load."""

from __future__ import annotations

import json
import logging
import os
import pickle
import random

import numpy as np
import pytest
import torch

from samadapt.engine import checkpoint as ckpt
from samadapt.engine.atomic import sha256_file
from samadapt.errors import UserError


def _state(value: float = 1.0) -> dict:
    return {"model": {"w": torch.full((3,), value)}, "progress": {"global_step": 1}}


def _forge_record(path, step=1):
    """A record with a *correct* hash, as an attacker who can write files could make."""
    ckpt.record_path(path).write_text(json.dumps({"file": path.name, "sha256": sha256_file(path), "step": step}))


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


def test_round_trip_keeps_state_and_meta(tmp_path):
    path = ckpt.save_training_state(tmp_path, 7, _state(2.0), meta={"lr": 1e-4, "nested": {"a": [1, 2]}})
    state, meta = ckpt.load_training_state(path)
    assert torch.equal(state["model"]["w"], torch.full((3,), 2.0))
    assert meta == {"lr": 1e-4, "nested": {"a": [1, 2]}}
    assert (tmp_path / "latest").read_text().strip() == "ckpt-00000007.pt"
    record = json.loads(ckpt.record_path(path).read_text())
    assert record["sha256"] == sha256_file(path) and record["step"] == 7


@pytest.mark.parametrize("how", ["torch.save", "plain pickle"])
def test_pickle_that_runs_code_is_refused(tmp_path, monkeypatch, how):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "ckpt-00000001.pt"
    payload = {"format": 1, "meta_json": "{}", "model": RunsCode()}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    _forge_record(path)
    with pytest.raises(UserError, match="refusing to load") as info:
        ckpt.load_training_state(path)
    assert str(path) in str(info.value)
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()


def test_truncated_checkpoint_is_refused_by_hash(tmp_path):
    path = ckpt.save_training_state(tmp_path, 1, _state())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated or corrupted") as info:
        ckpt.load_training_state(path)
    assert str(path) in str(info.value)


def test_truncated_checkpoint_with_matching_record_is_refused_by_reader(tmp_path):
    path = ckpt.save_training_state(tmp_path, 1, _state())
    path.write_bytes(path.read_bytes()[:200])
    _forge_record(path)
    with pytest.raises(UserError, match="unreadable, truncated or corrupted"):
        ckpt.load_training_state(path)


def test_flipped_byte_is_a_hash_mismatch(tmp_path):
    path = ckpt.save_training_state(tmp_path, 1, _state())
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match its record"):
        ckpt.load_training_state(path)


def test_file_without_record_is_never_loaded(tmp_path):
    path = ckpt.save_training_state(tmp_path, 1, _state())
    ckpt.record_path(path).unlink()
    with pytest.raises(UserError, match="never completed"):
        ckpt.load_training_state(path)
    assert ckpt.list_checkpoints(tmp_path) == []


def test_keep_last_prunes_oldest_and_stale_temporaries(tmp_path):
    (tmp_path / ".ckpt-00000001.pt.abc.tmp").write_bytes(b"half")
    (tmp_path / "ckpt-00000000.pt").write_bytes(b"complete file whose record was never written")
    for step in range(1, 6):
        ckpt.save_training_state(tmp_path, step, _state(step), keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt-00000005.pt", "ckpt-00000004.pt"]
    assert not list(tmp_path.glob(".*.tmp"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt-00000004.json", "ckpt-00000004.pt", "ckpt-00000005.json", "ckpt-00000005.pt", "latest"]


def test_resume_falls_back_past_a_corrupt_newest_with_a_warning(tmp_path, caplog):
    ckpt.save_training_state(tmp_path, 1, _state(1.0))
    newest = ckpt.save_training_state(tmp_path, 2, _state(2.0))
    newest.write_bytes(newest.read_bytes()[:-10])
    with caplog.at_level(logging.WARNING, logger="samadapt.engine.checkpoint"):
        state, _, path = ckpt.load_resumable(tmp_path)
    assert path.name == "ckpt-00000001.pt" and state["model"]["w"][0] == 1.0
    assert "ckpt-00000002.pt" in caplog.text


def test_resume_with_nothing_complete_names_the_folder(tmp_path):
    with pytest.raises(UserError, match="no complete checkpoint") as info:
        ckpt.load_resumable(tmp_path / "checkpoints")
    assert str(tmp_path) in str(info.value)


def test_different_config_is_refused_naming_the_key():
    saved = {"run": {"lr": 1e-4, "model": {"size": "tiny"}}, "epochs": 10}
    ckpt.check_same_config(saved, {"run": {"lr": 1e-4, "model": {"size": "tiny"}}, "epochs": 20}, may_differ=["epochs"])
    with pytest.raises(UserError, match=r"'run\.model\.size' was 'tiny' .* is 'large'"):
        ckpt.check_same_config(saved, {"run": {"lr": 1e-4, "model": {"size": "large"}}, "epochs": 10})
    with pytest.raises(UserError, match="'run.extra'"):
        ckpt.check_same_config(saved, {"run": {"lr": 1e-4, "model": {"size": "tiny"}, "extra": 1}, "epochs": 10})


def test_meta_must_be_json(tmp_path):
    with pytest.raises(UserError, match="JSON"):
        ckpt.save_training_state(tmp_path, 1, _state(), meta={"bad": object()})
    assert not any(tmp_path.iterdir())


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    path = ckpt.save_training_state(tmp_path, 1, {"rng": ckpt.capture_rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    state, _ = ckpt.load_training_state(path)
    ckpt.restore_rng_state(state["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_a_failed_torch_write_is_one_line_naming_the_checkpoint(tmp_path, monkeypatch):
    """A full disk reaches torch's zip writer as a RuntimeError, not an OSError: still a user error."""
    import torch

    from samadapt.engine.checkpoint import write_checkpoint_file
    from samadapt.errors import UserError

    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    target = tmp_path / "ckpt-00000001.pt"
    with pytest.raises(UserError, match="cannot write the checkpoint: torch's writer failed") as failed:
        write_checkpoint_file(target, {"model": {}})
    assert str(target) in str(failed.value) and not list(tmp_path.iterdir())  # nothing left behind
