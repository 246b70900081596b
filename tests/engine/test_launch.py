"""The torchrun wrapper says why workers failed: bad input stays quiet, anything else is named."""

from __future__ import annotations

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
