"""Shared measuring tools: medians after warm-up, matmul throughput, peak RSS, JSON output."""

from __future__ import annotations

import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def median_seconds(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> tuple[float, list[float]]:
    """Run `fn` `warmup` times untimed, then `repeats` times; return the median and all times."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def matmul_gflops(n: int = 2048, repeats: int = 5, dtype=None) -> float:
    """Matmul throughput of this machine right now (GFLOP/s; fp32 unless `dtype`), the yardstick for model speed."""
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    seconds, _ = median_seconds(lambda: a @ b, repeats=repeats, warmup=2)
    return 2 * n**3 / seconds / 1e9


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine() -> dict:
    import os

    import torch

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }


def write_result(name: str, result: dict, out_dir: Path = RESULTS) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    result = {"suite": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(), **result}
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def write_markdown_table(folder: Path, name: str, lines: list[str], numbers) -> str:
    """Print a markdown table (its lines) and write it to `folder/name.md`, its numbers to
    `folder/name.json`; returns the table's text."""
    text = "\n".join(lines) + "\n"
    (folder / f"{name}.md").write_text(text)
    (folder / f"{name}.json").write_text(json.dumps(numbers, indent=1) + "\n")
    print(text)
    return text


def print_table(title: str, rows: list[dict]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print(f"\n{title}")
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(_fmt(row.get(c)).ljust(widths[c]) for c in columns))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def mean_sd(values: list[float]) -> str:
    """'mean ± sd' to 3 decimals; one value alone; '–' for none (report tables over folds or seeds)."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"
