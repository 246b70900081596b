"""Stage bookkeeping for `samadapt demo`: numbered headers, wall and CPU time, machine load.

The demo is meant to take about 15 minutes on a quiet 2-core CPU, but it is often run on a busy
machine. Wall time alone then says little, so every stage also records the CPU time the process
used and the load average around it; CPU time divided by the threads in use estimates the wall
time the stage would take with the machine to itself (an optimistic estimate: threads never
scale perfectly).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass


@dataclass
class StageTime:
    name: str
    wall_seconds: float
    cpu_seconds: float
    threads: int
    load_before: float
    load_after: float

    @property
    def quiet_estimate(self) -> float:
        """Wall seconds this stage would take on an otherwise idle machine (see module doc)."""
        cores = os.cpu_count() or 1
        return max(self.cpu_seconds / max(1, min(self.threads, cores)), 0.0)

    def as_dict(self) -> dict:
        return {**asdict(self), "quiet_estimate_seconds": self.quiet_estimate}


def _load() -> float:
    try:
        return float(os.getloadavg()[0])
    except OSError:  # not available on every platform
        return float("nan")


class StageClock:
    """Prints `[i/n] name` before a stage and `done in ...` after it, and keeps the times."""

    def __init__(self, console, total: int):
        self.console, self.total, self.index = console, total, 0
        self.times: list[StageTime] = []
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[None]:
        import torch

        self.index += 1
        self.console.rule(f"[bold][{self.index}/{self.total}] {name}[/]" + (f"  [dim]{detail}[/]" if detail else ""),
                          align="left")
        load_before, wall, cpu = _load(), time.perf_counter(), time.process_time()
        yield
        record = StageTime(name, time.perf_counter() - wall, time.process_time() - cpu, torch.get_num_threads(),
                           load_before, _load())
        self.times.append(record)
        self.console.print(f"    done in {record.wall_seconds:.1f} s (CPU {record.cpu_seconds:.1f} s, "
                           f"load {record.load_after:.1f}; quiet-machine estimate {record.quiet_estimate:.0f} s)")

    def as_dicts(self) -> list[dict]:
        return [t.as_dict() for t in self.times]

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def case_progress(total: int, description: str):
    """A tqdm bar for per-case loops (evaluation, caching); returns (bar, callback)."""
    import sys

    from tqdm import tqdm

    bar = tqdm(total=total, desc=description, leave=False, file=sys.stderr, dynamic_ncols=True)
    return bar, lambda *_: bar.update(1)
