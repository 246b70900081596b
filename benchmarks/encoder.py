"""Encoder speed and memory: Hiera-T forward at several sizes, against this machine's matmul speed.

For each size a fresh process builds the model (so peak RSS is that size's own), times the encoder
(median of >= 3 after warm-up), counts its FLOPs with torch.utils.flop_counter, and times the whole
`predict` pipeline on one image of that size (read -> preprocess -> encode -> decode -> resize ->
write). Reported: seconds, GFLOP, GFLOP/s as a fraction of the fp32 matmul throughput measured in the
same run, predict/encoder time ratio, peak RSS.

    python -m benchmarks.run encoder            # 256, 512, 1024
    python -m benchmarks.run encoder --quick    # 256, 512
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import matmul_gflops, median_seconds, peak_rss_mb, print_table, write_result

MODEL = "sam2-hiera-tiny"


def measure_one(size: int, repeats: int) -> dict:
    """Runs inside a child process: everything for one image size."""
    import numpy as np
    import torch
    from PIL import Image
    from torch.utils.flop_counter import FlopCounterMode

    from samadapt.inference.predict import Prompt, run_predict
    from samadapt.modeling.registry import build_model

    torch.manual_seed(0)
    model = build_model(MODEL, image_size=size).eval()
    pixels = torch.randn(1, 3, size, size)
    with torch.inference_mode():
        encode_s, encode_all = median_seconds(lambda: model.encode(pixels), repeats=repeats, warmup=1)
        counter = FlopCounterMode(display=False)
        with counter:
            model.encode(pixels)
    gflop = counter.get_total_flops() / 1e9

    with tempfile.TemporaryDirectory() as tmp:
        image = (np.random.default_rng(0).random((size, size)) * 255).astype(np.uint8)
        path = Path(tmp) / "image.png"
        Image.fromarray(image).save(path)
        predict_s, _ = median_seconds(
            lambda: run_predict(model, [path], Path(tmp) / "out", Prompt(), progress=False), repeats=repeats, warmup=1
        )
    return {
        "size": size,
        "encode_s": encode_s,
        "encode_all_s": encode_all,
        "gflop": gflop,
        "gflops_per_s": gflop / encode_s,
        "predict_s": predict_s,
        "predict_over_encode": predict_s / encode_s,
        "peak_rss_mb": peak_rss_mb(),
    }


def run(quick: bool = False) -> dict:
    sizes = [256, 512] if quick else [256, 512, 1024]
    repeats = 3 if quick else 5
    matmul_before = matmul_gflops()
    rows = []
    for size in sizes:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.encoder", "--one", str(size), "--repeats", str(repeats)],
            capture_output=True, text=True, check=True,
        )
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    matmul_after = matmul_gflops()
    matmul = max(matmul_before, matmul_after)  # the machine's capability; the lower one says it was busy
    for row in rows:
        row["fraction_of_matmul"] = row["gflops_per_s"] / matmul
    table = [
        {k: row[k] for k in ("size", "encode_s", "gflop", "gflops_per_s", "fraction_of_matmul", "predict_s",
                             "predict_over_encode", "peak_rss_mb")}
        for row in rows
    ]
    print_table(f"{MODEL} encoder (fp32 matmul: {matmul:.0f} GFLOP/s, before {matmul_before:.0f} / after {matmul_after:.0f})", table)
    targets = {"predict_over_encode<=1.15": all(r["predict_over_encode"] <= 1.15 for r in rows)}
    big = [r for r in rows if r["size"] == 1024]
    if big:
        targets["peak_rss_1024<=2500MB"] = big[0]["peak_rss_mb"] <= 2500
    result = {"model": MODEL, "matmul_gflops": matmul, "matmul_gflops_before": matmul_before,
              "matmul_gflops_after": matmul_after, "rows": rows, "targets_met": targets}
    path = write_result("encoder", result)
    print(f"targets: {targets}\nwrote {path}")
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--one", type=int, help="measure one size in this process and print JSON")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.repeats)))
    else:
        run(args.quick)
