"""Run benchmark suites: `python -m benchmarks.run [SUITE ...] [--quick]`.

Each suite is a module in this folder with `run(quick: bool) -> dict`; it prints a table and writes
`benchmarks/results/<suite>.json`. Suites are measured on demand, never as timed unit tests.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUITES = ("encoder", "data_loader", "mae_sparse", "fewshot", "fast_encoder", "train_precision", "studio", "propagate")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("suites", nargs="*", default=list(SUITES), help=f"any of {', '.join(SUITES)}")
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    args = parser.parse_args(argv)
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        parser.error(f"unknown suite(s): {', '.join(unknown)}")
    for name in args.suites:
        importlib.import_module(f"benchmarks.{name}").run(quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
