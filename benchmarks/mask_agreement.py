"""Do the faster inference paths give the same masks? A fine-tuned run, real frames, every path.

    python -m benchmarks.mask_agreement --model runs/ffa_cv/mae_sam2/fold0 \
        --input ../shared/data/ffa/labeled/images [--threads 1]

Each path runs `samadapt predict` on the same frames with the run's class prompts (prompt-free,
multi-class): the plain fp32 model (`--no-fast`, the reference), the fast encoder in fp32 and in bf16,
and the run exported with `samadapt export --format onnx` run in onnxruntime, in fp32 and after
`--quantize int8`. For every other path and class: IoU of its masks with the reference's, pooled over
frames (sum of intersections over sum of unions) and the worst frame; the share of pixels whose
label changed; and the command's CPU seconds (user + system of the child, steadier than wall time
on a shared machine). Writes benchmarks/results/mask_agreement.json (`--name` for another). Speed against Meta's code is
`python -m benchmarks.run fast_encoder`; this script judges accuracy where users see it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import print_table, write_result

PATHS = {  # name -> (export options or None, predict options)
    "plain fp32": (None, ["--no-fast"]),
    "fast fp32": (None, ["--fast", "--precision", "fp32"]),
    "fast bf16": (None, ["--fast", "--precision", "bf16"]),
    "onnxruntime fp32": ([], ["--backend", "onnxruntime"]),
    "onnxruntime int8": (["--quantize", "int8"], ["--backend", "onnxruntime"]),
}
REFERENCE = "plain fp32"


def _samadapt(args: list[str], threads: int) -> float:
    """Run one samadapt command in a child process; return its CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, "-m", "samadapt", *args], check=True, env=env, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _masks(folder: Path) -> dict[str, np.ndarray]:
    from PIL import Image

    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*_mask.png"))}


def agreement(reference: dict[str, np.ndarray], other: dict[str, np.ndarray], classes: list[str]) -> dict:
    """Per class: pooled IoU, worst-frame IoU (frames where either has the class), changed pixels."""
    if reference.keys() != other.keys():
        raise RuntimeError(f"the paths predicted different frames: {sorted(reference.keys() ^ other.keys())}")
    result = {}
    for value, name in enumerate(classes, start=1):
        inter = union = 0
        worst = 1.0
        for key, ref in reference.items():
            a, b = ref == value, other[key] == value
            i, u = int((a & b).sum()), int((a | b).sum())
            inter, union = inter + i, union + u
            if u:
                worst = min(worst, i / u)
        result[name] = {"iou": inter / union if union else 1.0, "worst_frame_iou": worst}
    changed = sum(int((reference[k] != other[k]).sum()) for k in reference)
    result["changed_pixels"] = changed / sum(r.size for r in reference.values())
    return result


def measure(model: Path, frames: Path, threads: int, work: Path) -> dict:
    classes = json.loads((model / "summary.json").read_text())["classes"]  # a fine-tuning run's class names
    cpu, masks = {}, {}
    for name, (export, predict) in PATHS.items():
        out = work / name.replace(" ", "_")
        source = str(model)
        if export is not None:
            source = str(work / f"onnx_{name.split()[-1]}")
            if not Path(source).exists():
                _samadapt(["export", "--model", str(model), "--format", "onnx", "--out", source, *export], threads)
        cpu[name] = _samadapt(["predict", "--model", source, "--input", str(frames), "--out", str(out),
                               "--threads", str(threads), *predict], threads)
        masks[name] = _masks(out)
    return {"classes": classes, "frames": len(masks[REFERENCE]), "cpu_seconds": cpu,
            "agreement": {name: agreement(masks[REFERENCE], masks[name], classes)
                          for name in PATHS if name != REFERENCE}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a fine-tuning run folder")
    parser.add_argument("--input", type=Path, required=True, help="a folder of frames")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="mask_agreement",
                        help="result file benchmarks/results/NAME.json (one per data set)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args.model, args.input, args.threads, Path(tmp))
    result.update(model=str(args.model), input=str(args.input), threads=args.threads,
                  load_average=os.getloadavg()[0])
    rows = []
    for name in PATHS:
        found = result["agreement"].get(name)
        row = {"path": name, "CPU s": round(result["cpu_seconds"][name], 1)}
        for c in result["classes"]:
            row[f"{c} IoU (worst frame)"] = (f"{found[c]['iou']:.4f} ({found[c]['worst_frame_iou']:.4f})"
                                            if found else "reference")
        row["pixels changed"] = f"{found['changed_pixels']:.2e}" if found else "-"
        rows.append(row)
    print_table(f"masks of each path against {REFERENCE}, {result['frames']} frames", rows)
    write_result(args.name, result)
    return result


if __name__ == "__main__":
    main()
