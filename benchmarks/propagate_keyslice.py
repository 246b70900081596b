"""Propagation from one labelled slice per volume with `samadapt propagate`, scored in 3D.

    python -m benchmarks.propagate_keyslice --data ../shared/data/hippocampus --splits SPLITS.json \
        --out runs/propagate_hippo [--image-size 128] [--init sam2:PATH] [--keep-tracking]

For every test volume of the splits file, the key slice is the slice (last axis) with the most
labelled voxels; its labels are the prompt. `--init random` (the default) draws one set of random
weights (seed 0) and uses it for every volume, saved as a Hugging Face folder under OUT. Prints mean Dice, precision and recall per class over
the volumes and the number of slices predicted non-empty where the ground truth is empty.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np


def _scores(pred: np.ndarray, truth: np.ndarray, label: int) -> tuple[float, float, float]:
    p, t = pred == label, truth == label
    tp = float((p & t).sum())
    dice = 2 * tp / max(1.0, float(p.sum() + t.sum()))
    return dice, tp / max(1.0, float(p.sum())), tp / max(1.0, float(t.sum()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--splits", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--init", default="random")
    parser.add_argument("--keep-tracking", action="store_true")
    args = parser.parse_args()
    names = json.loads(args.splits.read_text())["test"]["patients"]
    args.out.mkdir(parents=True, exist_ok=True)
    init = args.init
    if init == "random":  # `samadapt propagate --init random` draws new weights on every call
        import torch

        from samadapt.modeling.sam2_video import build_memory_model

        torch.manual_seed(0)
        build_memory_model("sam2.1-hiera-tiny", args.image_size).hf.save_pretrained(args.out / "random_weights")
        init = f"sam2:{args.out / 'random_weights'}"
    rows = []
    for name in names:
        image, labels = args.data / "imagesTr" / f"{name}.nii.gz", args.data / "labelsTr" / f"{name}.nii.gz"
        truth_image = nib.load(str(labels))
        truth = np.asarray(truth_image.dataobj).astype(np.uint8)
        key = int(np.argmax((truth > 0).sum(axis=(0, 1))))
        prompt = np.zeros_like(truth)
        prompt[:, :, key] = truth[:, :, key]
        prompt_path, out = args.out / f"{name}_key.nii.gz", args.out / f"{name}_seg.nii.gz"
        nib.save(nib.Nifti1Image(prompt, truth_image.affine), str(prompt_path))
        command = [sys.executable, "-m", "samadapt", "propagate", "--input", str(image), "--labels",
                   str(prompt_path), "--out", str(out), "--model", "sam2.1-hiera-tiny", "--init", init,
                   "--image-size", str(args.image_size), "--threads", "1"]
        subprocess.run(command + (["--keep-tracking"] if args.keep_tracking else []), check=True,
                       stderr=subprocess.DEVNULL)
        pred = np.asarray(nib.load(str(out)).dataobj)
        empty_truth = ~(truth > 0).any(axis=(0, 1))
        false_slices = int(((pred > 0).any(axis=(0, 1)) & empty_truth).sum())
        rows.append([*_scores(pred, truth, 1), *_scores(pred, truth, 2), false_slices])
    table = np.array(rows)
    for i, cls in enumerate(("anterior (1)", "posterior (2)")):
        d, p, r = table[:, 3 * i: 3 * i + 3].mean(axis=0)
        print(f"{cls}: Dice {d:.3f}  precision {p:.3f}  recall {r:.3f}")
    print(f"mean Dice {table[:, [0, 3]].mean():.3f} over {len(rows)} volumes; "
          f"false-positive slices {int(table[:, 6].sum())} in all")


if __name__ == "__main__":
    main()
