"""Turn SIGINT/SIGTERM into a polite request to stop after the current training step.

Schedulers (SLURM, Kubernetes) send SIGTERM some seconds before killing a job, and Ctrl-C sends
SIGINT; either way the trainer should finish the step it is in, save a checkpoint and return. A
second Ctrl-C means the user will not wait, so it interrupts at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class StopRequest:
    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None


@contextlib.contextmanager
def stop_on_signals(enabled: bool = True) -> Iterator[StopRequest]:
    """Within the block, SIGINT/SIGTERM set `request.requested`; previous handlers come back after."""
    request = StopRequest()
    # Signal handlers can only be installed from the main thread (e.g. not inside a notebook worker).
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum, frame):
        if request.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        request.requested = True
        request.signal_name = signal.Signals(signum).name

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
