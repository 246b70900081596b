"""`python -m samadapt.engine.launch <torchrun arguments>`: torchrun that reports failed workers
by their exit code alone.

The workers print their own one-line errors (`samadapt: error: ...`); torchrun would add a
traceback and a failure report on stderr, which breaks the command line's one-line contract, and
exit with 1 even when every worker exited with 2 (bad input). This wrapper keeps torchrun's
behaviour otherwise and exits with 2 when a worker reported bad input, 1 for other failures.
"""

from __future__ import annotations

import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from samadapt.errors import EXIT_USER_ERROR

    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(args)
    except ChildFailedError as exc:
        codes = {failure.exitcode for failure in exc.failures.values()}
        return EXIT_USER_ERROR if EXIT_USER_ERROR in codes else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
