"""`samadapt predict`: segment 2D images with a SAM/SAM2 model, optionally prompted by a box or a point.

Pipeline per image: read -> preprocess (letterbox to the model size) -> encode -> decode -> map the
mask back to the original pixel grid -> write `<stem>_mask.png` (0/255, same size as the input) and
`<stem>_overlay.png`. Every input is checked before the model is built, and outputs go through a
staging folder, so bad input fails fast and a failure never leaves half the outputs behind.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from samadapt.errors import UserError
from samadapt.options import flag

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
# Output names of every predicting command (`predict`, `fewshot predict`): <stem>_mask.png (or
# .nii.gz), <stem>_overlay.png and, for class masks, classes.json naming the values.
MASK_SUFFIX = "_mask"
OVERLAY_SUFFIX = "_overlay"
CLASSES_FILE = "classes.json"


def classes_json(class_names: list[str]) -> str:
    """The classes.json text: {"0": "background", "1": first class, ...}."""
    import json

    classes = {"0": "background", **{str(k): name for k, name in enumerate(class_names, start=1)}}
    return json.dumps(classes, indent=1) + "\n"


@dataclass(frozen=True)
class Prompt:
    """Optional user prompt in the original image's pixel coordinates (x to the right, y down)."""

    box: tuple[float, float, float, float] | None = None
    point: tuple[float, float] | None = None

    def check_inside(self, height: int, width: int, image: Path) -> None:
        """Raise a `UserError` naming the value when the prompt falls outside the image."""
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if not (x0 < x1 and y0 < y1):
                raise UserError(f"{flag('box')} {x0:g} {y0:g} {x1:g} {y1:g}: needs x0 < x1 and y0 < y1")
            if min(x0, y0) < 0 or x1 > width or y1 > height:
                raise UserError(f"{flag('box')} {x0:g} {y0:g} {x1:g} {y1:g} lies outside the {width}x{height} image", image)
        if self.point is not None:
            x, y = self.point
            if not (0 <= x < width and 0 <= y < height):
                raise UserError(f"{flag('point')} {x:g} {y:g} lies outside the {width}x{height} image", image)


@dataclass
class StageTimer:
    """Wall-clock seconds spent per pipeline stage, summed over images."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, stage: str, start: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - start
        return now


def collect_images(path: str | Path) -> list[Path]:
    """One image file, or the image files directly inside a folder (sorted)."""
    path = Path(path)
    if not path.exists():
        raise UserError("input not found", path)
    if path.is_file():
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise UserError(f"unsupported image type '{path.suffix}' (expected one of {', '.join(IMAGE_SUFFIXES)})", path)
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder", path)
    stems: dict[str, Path] = {}
    for file in files:
        if file.stem in stems:  # outputs are named by stem, so a.png and a.jpg would collide
            raise UserError(f"two inputs share the name '{file.stem}' ({stems[file.stem].name}, {file.name})", path)
        stems[file.stem] = file
    return files


def check_inputs(inputs: list[Path], prompt: Prompt | None = None) -> None:
    """Decode every input once and check the prompt against its size; raises `UserError`."""
    from samadapt.data.io import read_image

    for path in inputs:
        image = read_image(path)
        if prompt is not None:
            prompt.check_inside(image.shape[0], image.shape[1], path)


@torch.inference_mode()
def segment(model, image: np.ndarray, prompt: Prompt, timer: StageTimer | None = None) -> np.ndarray:
    """Segment one image. Returns a boolean mask (H, W) on the image's own pixel grid.

    Without a prompt the model's prompt-free output is used (for a fine-tuned model that is its
    learned class prompt; for a foundation model it is the official "no prompt" behaviour). A single
    point is ambiguous, so, as SAM recommends, three candidates are decoded and the one with the
    highest predicted IoU is kept.
    """
    from samadapt.data.preprocess import prepare_image, restore_logits

    timer = timer or StageTimer()
    device = next(model.parameters()).device  # inputs follow the model (CPU or GPU)
    start = time.perf_counter()
    pixels, box = prepare_image(image, model.image_size)
    start = timer.add("preprocess", start)
    features = model.encode(pixels[None].to(device))
    start = timer.add("encode", start)
    kwargs: dict = {}
    if prompt.box is not None:
        corners = box.to_model_xy(np.asarray(prompt.box, dtype=np.float64).reshape(2, 2)).reshape(4)
        kwargs["boxes"] = torch.tensor(corners, dtype=torch.float32, device=device).view(1, 1, 4)
    if prompt.point is not None:
        xy = box.to_model_xy(np.asarray(prompt.point, dtype=np.float64))
        kwargs["points"] = torch.tensor(xy, dtype=torch.float32, device=device).view(1, 1, 1, 2)
        kwargs["point_labels"] = torch.ones(1, 1, 1, dtype=torch.int64, device=device)
    multimask = prompt.point is not None and prompt.box is None
    out = model.decode(features, multimask=multimask, **kwargs)
    logits = out.logits[0, 0]  # (M, h, w)
    best = int(out.iou[0, 0].argmax()) if multimask else 0
    start = timer.add("decode", start)
    full = restore_logits(logits[best], box)
    timer.add("resize", start)
    return (full > 0).cpu().numpy()


def _segment_folder(inputs: list[Path], out_dir: Path, label_image, progress: bool, extra_files=None,
                    png_scale: int = 1) -> tuple:
    """Shared loop of both predict forms: read each image, `label_image(image, timer) -> (H, W)
    uint8 labels`, write `<stem>_mask.png` (labels × `png_scale`) and `<stem>_overlay.png` through a
    staging folder (so a failure leaves nothing behind). Returns ({image name: labels' class pixel counts}, StageTimer)."""
    from samadapt.data.io import png_bytes, read_image
    from samadapt.engine.atomic import staged_dir
    from samadapt.inference.overlay import overlay_labels

    timer = StageTimer()
    counts: dict[str, np.ndarray] = {}
    iterator = inputs
    if progress and len(inputs) > 1:
        from tqdm import tqdm

        iterator = tqdm(inputs, desc="predict", unit="img")
    with staged_dir(out_dir) as stage:
        for path in iterator:
            start = time.perf_counter()
            image = read_image(path)
            timer.add("read", start)
            labels = label_image(image, timer)
            start = time.perf_counter()
            (stage / f"{path.stem}{MASK_SUFFIX}.png").write_bytes(png_bytes(labels * np.uint8(png_scale)))
            (stage / f"{path.stem}{OVERLAY_SUFFIX}.png").write_bytes(png_bytes(overlay_labels(image, labels)))
            timer.add("write", start)
            counts[path.name] = np.bincount(labels.ravel(), minlength=256) / labels.size
        for name, text in (extra_files or {}).items():
            (stage / name).write_text(text)
    return counts, timer


def run_predict(
    model,
    inputs: list[Path],
    out_dir: Path,
    prompt: Prompt,
    progress: bool = True,
) -> dict:
    """Segment every image in `inputs` with a prompted (or prompt-free) foundation model and write
    binary masks (0/255) and overlays into `out_dir`.

    Returns a summary: number of images, foreground fraction per image, seconds per stage.
    """
    # Check every input first (decoding is cheap next to the encoder), so a bad file or prompt is
    # reported before any work is done rather than after half the folder.
    check_inputs(inputs, prompt)

    def label_image(image, timer):
        return segment(model, image, prompt, timer).astype(np.uint8)

    # 255 marks foreground in the saved PNG, as binary-mask viewers expect
    fractions, timer = _segment_folder(inputs, out_dir, label_image, progress, png_scale=255)
    return {"images": len(inputs), "foreground_fraction": {k: float(v[1]) for k, v in fractions.items()},
            "seconds": dict(timer.seconds)}


def run_predict_classes(model, inputs: list[Path], out_dir: Path, progress: bool = True) -> dict:
    """Segment every image with a fine-tuned multi-class model (a loaded run's model, no prompt).

    Writes `<stem>_mask.png` as an index mask (0 background, k = class k, in the order of
    `classes.json`, same size as the input) and `<stem>_overlay.png`. Returns a summary with the
    fraction of pixels per class per image and seconds per stage.
    """
    from samadapt.finetune.runs import segment_index

    check_inputs(inputs)  # unreadable files fail before any work, as in `run_predict`
    names = list(model.class_names)

    def label_image(image, timer):
        start = time.perf_counter()
        labels = segment_index(model, image)
        timer.add("segment", start)
        return labels

    fractions, timer = _segment_folder(inputs, out_dir, label_image, progress, {CLASSES_FILE: classes_json(names)})
    return {"images": len(inputs),
            "foreground_fraction": {image: {name: float(v[k]) for k, name in enumerate(names, start=1)}
                                    for image, v in fractions.items()},
            "seconds": dict(timer.seconds)}
