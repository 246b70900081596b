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

`--prompt box` judges box prompts with the same trained weights: for every frame and every class the
reference predicts, the box around that class in the reference's prompt-free mask is given to that
class's query of the run (its class prompt with the box, as `finetune --prompt box` trains them) on
each path, and the box masks are compared the same way (the onnxruntime rows run the exported encoder and the torch mask decoder,
since a run's decoder.onnx has its class prompts baked in). Use a run trained with box prompts
(`finetune --prompt box`): a decoder trained on class prompts alone answers most boxes with an empty
mask, and the count of empty reference masks is printed so that this cannot pass unseen.
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


def _pooled_iou(pairs) -> dict:
    """Over (reference, other) boolean masks: IoU pooled (sum of intersections over sum of unions)
    and the worst single pair among those where either mask has pixels."""
    inter = union = 0
    worst = 1.0
    for a, b in pairs:
        i, u = int((a & b).sum()), int((a | b).sum())
        inter, union = inter + i, union + u
        if u:
            worst = min(worst, i / u)
    return {"iou": inter / union if union else 1.0, "worst_frame_iou": worst}


def agreement(reference: dict[str, np.ndarray], other: dict[str, np.ndarray], classes: list[str]) -> dict:
    """Per class: pooled IoU, worst-frame IoU (frames where either has the class), changed pixels."""
    if reference.keys() != other.keys():
        raise RuntimeError(f"the paths predicted different frames: {sorted(reference.keys() ^ other.keys())}")
    result = {name: _pooled_iou((ref == value, other[key] == value) for key, ref in reference.items())
              for value, name in enumerate(classes, start=1)}
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


def _box_encoders(model: Path, work: Path, threads: int) -> dict:
    """Path name -> (the run's class-prompt segmenter whose decoder is used, pixels -> ImageFeatures)."""
    import copy

    import torch

    from samadapt.finetune.runs import load_finetune_run
    from samadapt.inference.onnx_backend import OnnxSegmenter
    from samadapt.modeling.fast import accelerate
    from samadapt.modeling.segment_anything import ImageFeatures

    torch.set_num_threads(threads)
    segmenter = load_finetune_run(model).model.eval()
    encoders = {"plain fp32": (segmenter, segmenter.base.encode)}
    for name, precision in (("fast fp32", "fp32"), ("fast bf16", "bf16")):
        fast = copy.deepcopy(segmenter)
        accelerate(fast.base, fast=True, compile=False, precision=precision)
        encoders[name] = (fast, fast.base.encode)
    for name in ("onnxruntime fp32", "onnxruntime int8"):
        session = OnnxSegmenter(work / f"onnx_{name.split()[-1]}", threads).encoder

        def encode(pixels, s=session):
            out = [torch.from_numpy(a) for a in s.run(None, {"pixel_values": pixels.numpy()})]
            return ImageFeatures(out[0], tuple(out[1:]))
        encoders[name] = (segmenter, encode)
    return encoders


def _class_boxes(labels: np.ndarray, classes: list[str]) -> dict[str, tuple[float, float, float, float]]:
    """The box (x0, y0, x1, y1 in pixels, x1/y1 exclusive) around each class present in `labels`."""
    from samadapt.finetune.prompts import class_box

    return {name: tuple(class_box(labels == value, 0)) for value, name in enumerate(classes, start=1)
            if (labels == value).any()}


def box_masks(segmenter, encode, image: np.ndarray, boxes: dict) -> dict[str, np.ndarray]:
    """One encode and one decode of every class query with its box, as `finetune --prompt box`
    trains them (a class without a box gets the whole image): class -> (H, W) bool mask, for the
    classes in `boxes`."""
    import torch

    from samadapt.data.preprocess import prepare_image, restore_logits

    pixels, letterbox = prepare_image(image, segmenter.base.image_size)
    size = float(segmenter.base.image_size)
    corners = [letterbox.to_model_xy(np.asarray(boxes[name], dtype=np.float64).reshape(2, 2)).reshape(4)
               if name in boxes else np.array([0.0, 0.0, size, size]) for name in segmenter.class_names]
    with torch.inference_mode():
        logits = segmenter.decode_classes(encode(pixels[None]),
                                          boxes=torch.tensor(np.stack(corners), dtype=torch.float32)[None])
        return {name: (restore_logits(logits[0, k], letterbox) > 0).numpy()
                for k, name in enumerate(segmenter.class_names) if name in boxes}


def box_agreement(reference: dict, other: dict, classes: list[str]) -> dict:
    """Per class over (frame, class) box masks: pooled IoU and the worst frame."""
    result = {}
    for name in classes:
        keys = [k for k in reference if k[1] == name]
        empty = sum(1 for k in keys if not reference[k].any())  # a decoder never trained on boxes gives these
        result[name] = {**_pooled_iou((reference[k], other[k]) for k in keys), "boxes": len(keys),
                        "empty_reference_masks": empty}
    changed = sum(int((reference[k] != other[k]).sum()) for k in reference)
    result["changed_pixels"] = changed / max(1, sum(r.size for r in reference.values()))
    return result


def measure_boxes(model: Path, frames: Path, threads: int, work: Path, prompt_free: dict) -> dict:
    """Box prompts from the reference's prompt-free masks, decoded on every path (see the module doc)."""
    import time

    from samadapt.data.io import read_image

    classes = prompt_free["classes"]
    reference_labels = _masks(work / REFERENCE.replace(" ", "_"))
    encoders = _box_encoders(model, work, threads)
    masks: dict[str, dict] = {name: {} for name in encoders}
    seconds = dict.fromkeys(encoders, 0.0)
    for image_path in sorted(p for p in frames.iterdir() if f"{p.stem}_mask.png" in reference_labels):
        image = read_image(image_path)
        boxes = _class_boxes(reference_labels[f"{image_path.stem}_mask.png"], classes)
        for name, (segmenter, encode) in encoders.items():
            start = time.process_time()
            for cls, mask in box_masks(segmenter, encode, image, boxes).items():
                masks[name][(image_path.stem, cls)] = mask
            seconds[name] += time.process_time() - start
    return {"boxes": len(masks[REFERENCE]), "cpu_seconds": seconds,
            "agreement": {name: box_agreement(masks[REFERENCE], masks[name], classes)
                          for name in encoders if name != REFERENCE}}


def _print(title: str, result: dict, classes: list[str]) -> None:
    rows = []
    for name in PATHS:
        found = result["agreement"].get(name)
        row = {"path": name, "CPU s": round(result["cpu_seconds"][name], 1)}
        for c in classes:
            row[f"{c} IoU (worst frame)"] = (f"{found[c]['iou']:.4f} ({found[c]['worst_frame_iou']:.4f})"
                                            if found else "reference")
        row["pixels changed"] = f"{found['changed_pixels']:.2e}" if found else "-"
        rows.append(row)
    print_table(title, rows)
    empty = {c: result["agreement"]["fast fp32"][c].get("empty_reference_masks") for c in classes}
    if any(empty.values()):
        print(f"empty reference masks per class: {empty} (a decoder trained without box prompts gives "
              "empty box masks; train with `finetune --prompt box` for a meaningful box comparison)")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a fine-tuning run folder")
    parser.add_argument("--input", type=Path, required=True, help="a folder of frames")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompt", choices=("none", "box"), default="none",
                        help="box: also compare box-prompted masks (a box per class from the reference's masks)")
    parser.add_argument("--name", default="mask_agreement",
                        help="result file benchmarks/results/NAME.json (one per data set)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args.model, args.input, args.threads, Path(tmp))
        if args.prompt == "box":
            result["box_prompts"] = measure_boxes(args.model, args.input, args.threads, Path(tmp), result)
    result.update(model=str(args.model), input=str(args.input), threads=args.threads,
                  load_average=os.getloadavg()[0])
    _print(f"masks of each path against {REFERENCE}, {result['frames']} frames", result, result["classes"])
    if args.prompt == "box":
        _print(f"box-prompted masks against {REFERENCE}, {result['box_prompts']['boxes']} boxes",
               result["box_prompts"], result["classes"])
    write_result(args.name, result)
    return result


if __name__ == "__main__":
    main()
