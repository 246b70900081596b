"""Commands killed (SIGKILL) at seeded random moments: whatever the moment, the output folder is
absent, complete, or marked incomplete (and then refused by readers), never half-written and
unmarked; and running the command again (training: with --resume when it left checkpoints) ends in
exit 0 with complete outputs and no staging left behind.

Real processes, tiny sizes; `FUZZ_KILLS=N` kills each command at N moments instead of 2.
"""

from __future__ import annotations

import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from samadapt.engine.checkpoint import list_checkpoints
from samadapt.engine.run_folder import INCOMPLETE_FILE, refuse_incomplete
from samadapt.errors import UserError

KILLS = int(os.environ.get("FUZZ_KILLS", 2))
# (command, the file a complete output folder holds, whether it trains and can --resume)
COMMANDS = [
    ("fewshot train --data anat2d --cache anat2d_cache --shots 1 --epochs 20", "summary.json", True),
    ("pretrain --data fa --image-size 64 --batch-size 1 --epochs 2 --warmup-epochs 0", "encoder/samadapt.json", True),
    ("fewshot predict --model fs_run --input anat2d/images", "classes.json", False),
]


def _start(world: Path, command: str, out: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "samadapt", *shlex.split(command), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(argv, cwd=world, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _staging_left(out: Path) -> list[str]:
    # engine/atomic.staged_dir stages beside the final folder as .<name>.<random>.staging
    return [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.") and p.name.endswith(".staging")]


def _check_after_kill(out: Path, complete_file: str) -> str:
    """'absent', 'complete' or 'incomplete'; fails on a folder with outputs but no marker."""
    if not out.exists() or not any(out.iterdir()):
        return "absent"
    if (out / INCOMPLETE_FILE).is_file():
        with pytest.raises(UserError, match="is incomplete"):
            refuse_incomplete(out)  # readers refuse it
        return "incomplete"
    assert (out / complete_file).exists(), f"{out}: outputs without the incomplete marker: {sorted(os.listdir(out))}"
    return "complete"


@pytest.mark.slow
@pytest.mark.parametrize("command, complete_file, trains", COMMANDS, ids=[c.split()[0] + "-" + c.split()[1]
                                                                          for c, _, _ in COMMANDS])
def test_a_kill_at_any_moment_leaves_the_folder_absent_complete_or_marked(bad_world, tmp_path, command,
                                                                         complete_file, trains):
    rng = random.Random(f"{command}-0")
    states = []
    for trial in range(KILLS):
        out = tmp_path / f"out{trial}"
        process = _start(bad_world, command, out)
        time.sleep(rng.uniform(1.0, 12.0))  # start-up (imports) takes a few seconds of this
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        states.append(_check_after_kill(out, complete_file))

        # a training run resumes when it left a complete checkpoint; killed before its first one, the
        # same command starts it again (and --resume says so)
        again = command + (" --resume" if trains and list_checkpoints(out / "checkpoints") else "")
        rerun = _start(bad_world, again, out)
        _, err = rerun.communicate(timeout=600)
        assert rerun.returncode == 0, f"{again}: exit {rerun.returncode}: {err.strip()[-400:]}"
        assert "Traceback" not in err
        assert (out / complete_file).exists() and not (out / INCOMPLETE_FILE).exists()
        assert not _staging_left(out), _staging_left(out)
    assert len(states) == KILLS
