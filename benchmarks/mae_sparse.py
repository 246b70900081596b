"""MAE pre-training speed: sparse (masked units dropped) against dense (mask tokens) at mask ratio 0.75.

For each image size and path a fresh process builds Hiera-T with the MAE decoder, and times
(median after warm-up) a full training step (forward, backward, AdamW step) and an encoder-only
forward; it also counts the step's FLOPs (torch.utils.flop_counter, independent of how busy the
machine is) and reads the peak RSS. Reported: images/s, sparse/dense speed-up for both timings and
for the FLOPs, peak RSS and the step's own memory on top of the built model. fp32 on CPU.

One torch thread per process by default: on a machine shared with other jobs, multi-threaded wall
times swing by several times between runs, while single-thread process CPU time (`step_cpu_s`,
`train_cpu_speedup`) stays comparable. On a quiet machine, `--threads N` measures the real setting.

    python -m benchmarks.run mae_sparse --quick   # 256 and 512 px, 3 repeats, 1 thread
    python -m benchmarks.run mae_sparse           # 256, 512 and 1024 px, 5 repeats, 1 thread
    python -m benchmarks.mae_sparse --quick --threads 2
"""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.common import median_seconds, peak_rss_mb, print_table, write_result


def median_cpu_seconds(fn, repeats: int) -> float:
    """Median process CPU time of `fn` (all threads): less sensitive than wall time to other jobs
    sharing the machine, though not to their cache and memory-bandwidth pressure."""
    import statistics
    import time

    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)

RATIO = 0.75
TARGET_SPEEDUP = 2.5


def measure_one(size: int, path: str, batch: int, repeats: int, threads: int) -> dict:
    """Runs inside a child process: one size, one path."""
    import torch

    torch.set_num_threads(threads)
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import Sam2HieraDetConfig, Sam2HieraDetModel

    from samadapt.modeling.mae import MaskedAutoencoder
    from samadapt.modeling.masking import random_unit_mask, unit_grid
    from samadapt.pretrain.train import make_optimizer

    torch.manual_seed(0)
    mae = MaskedAutoencoder(Sam2HieraDetModel(Sam2HieraDetConfig(image_size=[size, size]))).train()
    optimiser = make_optimizer(mae, lr=1e-4, weight_decay=0.05)  # the pre-training command's own
    pixels = torch.randn(batch, 3, size, size)
    grid = unit_grid(size)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        mask = random_unit_mask(batch, grid, RATIO, generator)
        loss = mae(pixels, mask, path).loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    def encode() -> None:
        with torch.no_grad():
            mae.encode(pixels, random_unit_mask(batch, grid, RATIO, generator), path)

    baseline_mb = peak_rss_mb()
    step_s, step_all = median_seconds(step, repeats=repeats, warmup=1)
    step_peak_mb = peak_rss_mb()
    encode_s, _ = median_seconds(encode, repeats=repeats, warmup=1)
    step_cpu_s = median_cpu_seconds(step, repeats)
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return {
        "size": size, "path": path, "batch": batch,
        "step_s": step_s, "step_all_s": step_all, "train_images_per_s": batch / step_s, "step_cpu_s": step_cpu_s,
        "encode_s": encode_s, "encode_images_per_s": batch / encode_s,
        "step_gflop": counter.get_total_flops() / 1e9,
        "peak_rss_mb": step_peak_mb, "step_extra_mb": step_peak_mb - baseline_mb,
    }


def run(quick: bool = False, threads: int = 1) -> dict:
    sizes = [256, 512] if quick else [256, 512, 1024]
    repeats = 3 if quick else 5
    rows = []
    for size in sizes:
        batch = 2 if size <= 256 else 1
        for path in ("dense", "sparse"):
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.mae_sparse", "--one", str(size), "--path", path,
                 "--batch", str(batch), "--repeats", str(repeats), "--threads", str(threads)],
                capture_output=True, text=True, check=True,
            )
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    speedups = []
    for size in sizes:
        dense, sparse = (next(r for r in rows if r["size"] == size and r["path"] == p) for p in ("dense", "sparse"))
        speedups.append({
            "size": size,
            "train_speedup": dense["step_s"] / sparse["step_s"],
            "train_cpu_speedup": dense["step_cpu_s"] / sparse["step_cpu_s"],
            "encode_speedup": dense["encode_s"] / sparse["encode_s"],
            "flop_ratio": dense["step_gflop"] / sparse["step_gflop"],
            "memory_ratio": dense["step_extra_mb"] / max(sparse["step_extra_mb"], 1e-6),
        })
    columns = ("size", "path", "batch", "train_images_per_s", "step_cpu_s", "encode_images_per_s", "step_gflop", "peak_rss_mb",
               "step_extra_mb")
    print_table(f"MAE Hiera-T, mask ratio {RATIO}, fp32 CPU, {threads} thread(s)", [{k: r[k] for k in columns} for r in rows])
    print_table("sparse over dense", speedups)
    targets = {f"train_speedup>={TARGET_SPEEDUP}": all(s["train_speedup"] >= TARGET_SPEEDUP for s in speedups),
               f"train_cpu_speedup>={TARGET_SPEEDUP}": all(s["train_cpu_speedup"] >= TARGET_SPEEDUP for s in speedups)}
    result = {"model": "sam2-hiera-tiny", "mask_ratio": RATIO, "threads": threads, "rows": rows, "speedups": speedups,
              "targets_met": targets}
    out = write_result("mae_sparse", result)
    print(f"targets: {targets}\nwrote {out}")
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--one", type=int, help="measure one size in this process and print JSON")
    parser.add_argument("--path", choices=("dense", "sparse"), default="sparse")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per measuring process")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.path, args.batch, args.repeats, args.threads)))
    else:
        run(args.quick, args.threads)
