"""Run `samadapt studio` as a real server process and read the URL it prints."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def start_studio(folder: Path, *args: str, timeout: float = 60.0) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # stderr goes to a file, not a pipe nobody reads while the test drives the browser: a full pipe
    # would block the server; `process.stderr_log` holds it for the test to read after the process ends
    with tempfile.NamedTemporaryFile("w", suffix=".studio-stderr.log", delete=False) as log:
        process = subprocess.Popen([sys.executable, "-m", "samadapt", "studio", str(folder), "--port", "0", *args],
                                   stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    process.stderr_log = Path(log.name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if "open http" in line:
            return process, line.split("open ", 1)[1].strip()
        if not line and process.poll() is not None:
            break
    process.kill()
    process.wait(timeout=10)
    raise AssertionError(f"the studio did not start: {process.stderr_log.read_text()}")
