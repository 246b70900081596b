"""`python -m samadapt.engine.launch <torchrun arguments>`: torchrun that reports failed workers
in one line, by their exit code or signal.

Torchrun would add a traceback and a failure report on stderr, which breaks the command line's
one-line contract, and exit with 1 even when every worker exited with 2 (bad input). This wrapper
keeps torchrun's behaviour otherwise.

Every worker sees the same bad input. Each writes its one-line message into a folder this wrapper
owns (`ERROR_DIR_ENV`) instead of printing it: once the first worker exits, torchrun stops the
others, so "rank 0 prints" would lose the message whenever another rank got there first. When every
failed worker exited with 2 (besides those torchrun then stopped with SIGTERM) the wrapper prints the
lowest rank's message once and exits with 2. Any other failure would otherwise go unexplained (a
worker killed by the kernel's out-of-memory killer prints nothing), so it prints one line naming each
failed rank and its exit code or signal, and exits with the first such failure's code (128 + N for
signal N, as a shell reports it).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

ERROR_DIR_ENV = "SAMADAPT_WORKER_ERRORS"


def record_worker_error(message: str) -> bool:
    """Under this wrapper, keep a worker's one-line error for the wrapper to print; False elsewhere
    (plain torchrun or a single process: the caller prints it)."""
    folder = os.environ.get(ERROR_DIR_ENV)
    if not folder:
        return False
    (Path(folder) / f"rank{int(os.environ.get('RANK', '0')):05d}.txt").write_text(message)
    return True


def first_worker_error(folder: Path) -> str | None:
    """The lowest rank's recorded message, or None when no worker recorded one."""
    files = sorted(folder.glob("rank*.txt"))
    return files[0].read_text() if files else None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def failure_report(exit_codes: Mapping[int, int]) -> tuple[int, str | None]:
    """(exit code, line for stderr or None) for failed workers given as {rank: exit code}; a
    negative exit code is a signal, as `subprocess` reports it."""
    from samadapt.errors import EXIT_USER_ERROR

    # Once one worker fails, torchrun stops the others with SIGTERM: consequences, not causes.
    causes = {rank: code for rank, code in exit_codes.items() if code != -signal.SIGTERM} or dict(exit_codes)
    other = {rank: code for rank, code in sorted(causes.items()) if code != EXIT_USER_ERROR}
    if not other:
        return EXIT_USER_ERROR, None
    parts = [f"rank {rank} was killed by {_signal_name(-code)}" if code < 0 else f"rank {rank} exited with code {code}"
             for rank, code in other.items()]
    bad_input = len(causes) - len(other)
    if bad_input:
        parts.append(f"{bad_input} other rank(s) reported bad input")
    first = next(iter(other.values()))
    return (128 - first if first < 0 else first), "worker process failed: " + "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="samadapt-workers-") as folder:
        os.environ[ERROR_DIR_ENV] = folder  # the workers inherit it
        try:
            run(args)
        except ChildFailedError as exc:
            code, line = failure_report({rank: failure.exitcode for rank, failure in exc.failures.items()})
            said = first_worker_error(Path(folder))
            if said is not None:  # bad input on some rank: its message, beside any other failure
                line = said if line is None else f"{line}: {said}"
            if line is not None:
                print(f"samadapt: error: {line}", file=sys.stderr, flush=True)
            return code
        finally:
            del os.environ[ERROR_DIR_ENV]
    return 0


if __name__ == "__main__":
    sys.exit(main())
