"""`--devices N` re-runs a training command under torchrun on N local processes (gloo on the CPU)."""

from __future__ import annotations

import json
import shutil

import pytest

from samadapt.cli import _without_devices, main


def test_devices_flag_is_removed_before_relaunching():
    args = ["pretrain", "--data", "d", "--devices", "2", "--out", "o", "--devices=3", "--debug"]
    assert _without_devices(args) == ["pretrain", "--data", "d", "--out", "o", "--debug"]


@pytest.mark.parametrize("command", [
    ["pretrain", "--data", "nowhere", "--out", "run"],
    ["finetune", "--data", "nowhere", "--splits", "s.json", "--out", "run"],
    ["fewshot", "train", "--data", "nowhere", "--cache", "c", "--out", "run"],
    ["finetune-memory", "--data", "nowhere", "--splits", "s.json", "--out", "run"],
], ids=["pretrain", "finetune", "fewshot-train", "finetune-memory"])
def test_devices_below_one_is_refused_before_anything_runs(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--devices", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["samadapt: error: --devices must be at least 1, got 0"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_pretrain_on_two_cpu_processes_writes_one_run_folder(tmp_path, monkeypatch, capfd):
    from samadapt.data.phantoms import generate_phantoms
    from samadapt.engine.checkpoint import load_resumable

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    generate_phantoms(tmp_path / "phantoms", n=4, size=64, seed=0, kind="fa")
    shutil.move(tmp_path / "phantoms" / "images", tmp_path / "images")
    shutil.rmtree(tmp_path / "phantoms")
    monkeypatch.chdir(tmp_path)
    code = main(["pretrain", "--data", "images", "--out", "run", "--image-size", "64", "--batch-size", "1",
                 "--epochs", "1", "--warmup-epochs", "0", "--recon-every", "0", "--devices", "2"])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "run"]  # one run folder, nothing else
    # 4 images, 1 per process and step, 2 processes: 2 optimiser steps (a single process would take 4).
    rows = (tmp_path / "run" / "train.csv").read_text().strip().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["1", "2"]
    _, meta, _ = load_resumable(tmp_path / "run" / "checkpoints")
    assert meta["trainer"]["world_size"] == 2
    assert (tmp_path / "run" / "encoder" / "samadapt.json").is_file()
    statuses = [line for line in out.splitlines() if line.startswith("status: ")]
    assert len(statuses) == 1 and statuses[0].startswith("status: completed")  # printed by rank 0 only
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"


def test_bad_input_on_two_processes_is_still_one_line_and_exit_2(tmp_path, monkeypatch, capfd):
    """Each process sees the bad input; it is said once and torchrun's own report is not shown."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    code = main(["pretrain", "--data", "nowhere", "--out", "run", "--devices", "2"])
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines() == ["samadapt: error: nowhere: --data path does not exist"]
    assert code == 2
    assert list(tmp_path.iterdir()) == []
