"""Whole runs in subprocesses: killed and resumed runs end exactly like uninterrupted ones.

The tiny run (tiny_training.py) has dropout and a random augmentation, 4 optimiser steps per
epoch and 3 epochs, checkpoints every 3 steps and at each epoch end, deterministic mode on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from samadapt.engine.checkpoint import list_checkpoints

SCRIPT = Path(__file__).with_name("tiny_training.py")
pytestmark = pytest.mark.slow


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_tiny(run_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(SCRIPT), str(run_dir), *args], capture_output=True, text=True,
                          env=_env(), timeout=240)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def assert_same_run(a: Path, b: Path) -> None:
    wa = load_file(a / "final.safetensors")
    wb = load_file(b / "final.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    for log in ("train.csv", "epoch.csv"):  # every logged metric, step by step, without duplicates
        assert (a / log).read_text() == (b / log).read_text()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    run_tiny(run_dir)
    return run_dir


@pytest.mark.parametrize("corrupt_newest", [False, True], ids=["resume-latest", "newest-corrupt"])
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path, uninterrupted, corrupt_newest):
    killed = run_tiny(tmp_path, "--kill-at-step", "7", check=False)
    assert killed.returncode == -signal.SIGKILL
    assert "step 7" in killed.stdout and "step 8" not in killed.stdout
    checkpoints = list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in checkpoints] == ["ckpt-00000006.pt", "ckpt-00000004.pt"]  # step 6 is mid-epoch 2
    if corrupt_newest:
        checkpoints[0].write_bytes(checkpoints[0].read_bytes()[:-100])
    resumed = run_tiny(tmp_path, "--resume")
    assert "status completed" in resumed.stdout
    first_step = 5 if corrupt_newest else 7
    assert resumed.stdout.splitlines()[0] == f"step {first_step}"
    if corrupt_newest:
        assert "skipping damaged checkpoint" in resumed.stderr and "ckpt-00000006.pt" in resumed.stderr
    assert_same_run(uninterrupted, tmp_path)


def test_sigterm_finishes_the_step_saves_and_exits_cleanly(tmp_path, uninterrupted):
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(tmp_path), "--sleep", "0.3", "--checkpoint-every", "100"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if line.strip() == "step 2":
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=120)
    lines += out.splitlines()
    assert proc.returncode == 0, err
    assert "interrupted" in out and "Traceback" not in err
    last_step = max(int(x.split()[1]) for x in lines if x.startswith("step "))
    assert last_step < 12
    assert list_checkpoints(tmp_path / "checkpoints")[0].name == f"ckpt-{last_step:08d}.pt"
    run_tiny(tmp_path, "--resume")
    assert_same_run(uninterrupted, tmp_path)


def test_resume_with_a_different_config_is_refused(tmp_path):
    run_tiny(tmp_path, "--epochs", "1")
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    refused = run_tiny(tmp_path, "--resume", "--epochs", "2", "--lr", "0.01", check=False)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "'run.lr' was 0.05" in refused.stderr
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
    extended = run_tiny(tmp_path, "--resume", "--epochs", "2")  # more epochs is allowed
    assert extended.stdout.splitlines()[0] == "step 5"


def test_ddp_two_cpu_processes_match_single_process_with_same_global_batch(tmp_path):
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    common = ["--plain", "--epochs", "1", "--accumulate", "1"]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(SCRIPT), str(ddp_dir), "--batch-size", "2", *common],
                          capture_output=True, text=True, env=_env(), timeout=240)
    assert proc.returncode == 0, proc.stderr
    run_tiny(single_dir, "--batch-size", "4", *common)
    rank0 = load_file(ddp_dir / "rank0.safetensors")
    rank1 = load_file(ddp_dir / "rank1.safetensors")
    single = load_file(single_dir / "final.safetensors")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert all(torch.allclose(rank0[k], single[k], atol=1e-5) for k in rank0)
    # Logged losses are averaged over both ranks, so they match the single process too.
    ddp_rows = (ddp_dir / "train.csv").read_text().splitlines()[1:]
    single_rows = (single_dir / "train.csv").read_text().splitlines()[1:]
    assert len(ddp_rows) == len(single_rows) == 8
    for a, b in zip(ddp_rows, single_rows):
        assert [float(x) for x in a.split(",")] == pytest.approx([float(x) for x in b.split(",")], rel=1e-5)
