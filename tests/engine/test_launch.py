"""The torchrun wrapper says why workers failed: bad input stays quiet, anything else is named."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from samadapt.engine.launch import failure_report


def test_all_workers_reporting_bad_input_exit_2_without_a_second_message():
    assert failure_report({0: 2, 1: 2}) == (2, None)


def test_workers_stopped_by_torchrun_after_a_failure_are_not_causes():
    assert failure_report({0: -15, 1: 2}) == (2, None)
    code, line = failure_report({0: -15, 1: -15})  # stopped from outside: still said
    assert code == 128 + 15 and "SIGTERM" in line


def test_a_signal_is_named_and_exits_like_a_shell():
    code, line = failure_report({1: -9})
    assert code == 128 + 9 and "rank 1 was killed by SIGKILL" in line


def test_mixed_failures_are_not_reported_as_bad_input():
    code, line = failure_report({0: 2, 1: 1})
    assert code == 1
    assert "rank 1 exited with code 1" in line and "1 other rank(s) reported bad input" in line


@pytest.mark.slow
def test_worker_killed_by_a_signal_is_reported(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-m", "samadapt.engine.launch", "--standalone", "--nproc-per-node=1",
                           str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 137, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("samadapt: error:")]
    assert errors == ["samadapt: error: worker process failed: rank 0 was killed by SIGKILL"], done.stderr


def test_the_lowest_rank_message_is_the_one_reported(tmp_path, monkeypatch):
    from samadapt.engine.launch import ERROR_DIR_ENV, first_worker_error, record_worker_error

    assert first_worker_error(tmp_path) is None
    monkeypatch.setenv(ERROR_DIR_ENV, str(tmp_path))
    for rank in (10, 2):
        monkeypatch.setenv("RANK", str(rank))
        assert record_worker_error(f"said by {rank}")
    assert first_worker_error(tmp_path) == "said by 2"
    monkeypatch.delenv(ERROR_DIR_ENV)
    assert not record_worker_error("nowhere to keep it")


@pytest.mark.slow
def test_bad_input_is_said_once_even_when_rank_0_is_stopped_before_saying_it(tmp_path):
    # Rank 1 fails first; torchrun then stops rank 0, which never gets to print.
    script = tmp_path / "worker.py"
    script.write_text("import os, sys, time\nfrom samadapt.cli import main\n"
                      "if os.environ['RANK'] == '0':\n    time.sleep(120)\n"
                      "sys.exit(main(['pretrain', '--data', 'nowhere', '--out', 'run']))\n")
    done = subprocess.run([sys.executable, "-m", "samadapt.engine.launch", "--standalone", "--nproc-per-node=2",
                           str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # else torchrun warns about it
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == ["samadapt: error: nowhere: --data path does not exist"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["worker.py"]


@pytest.mark.slow
def test_bad_input_seen_by_one_rank_is_named_beside_the_others_failure(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text("import os, sys, time\nfrom samadapt.cli import main\n"
                      "if os.environ['RANK'] == '0':\n"  # fails otherwise, once rank 1 has said its line
                      "    while not os.listdir(os.environ['SAMADAPT_WORKER_ERRORS']):\n        time.sleep(0.1)\n"
                      "    sys.exit(3)\n"
                      "sys.exit(main(['pretrain', '--data', 'nowhere', '--out', 'run']))\n")
    done = subprocess.run([sys.executable, "-m", "samadapt.engine.launch", "--standalone", "--nproc-per-node=2",
                           str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 3, done.stderr
    line, = done.stderr.strip().splitlines()
    assert line.startswith("samadapt: error: worker process failed: rank 0 exited with code 3")
    assert line.endswith(": nowhere: --data path does not exist")
