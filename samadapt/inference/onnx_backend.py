"""`samadapt predict --backend onnxruntime`: segment images with an ONNX export folder.

The networks run in onnxruntime, not torch: encoder.onnx on the letterboxed image, decoder.onnx on
its features. Reading, letterboxing and mapping the logits back to the image grid are the same
functions as the torch backend's (`samadapt.data.preprocess`, which resize with torch's
antialiased bilinear filter), so both backends see identical inputs and masks differ only by the
graphs' numerical error.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from samadapt.errors import UserError


class OnnxSegmenter:
    """The two onnxruntime sessions of an export folder and its metadata."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        from samadapt.errors import require_module
        from samadapt.export.onnx_folder import DECODER_FILE, ENCODER_FILE, read_onnx_folder

        ort = require_module("onnxruntime", "onnx", "--backend onnxruntime")
        self.folder = Path(folder)
        self.meta = read_onnx_folder(self.folder)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(self.folder / ENCODER_FILE), options, providers=providers)
        self.decoder = ort.InferenceSession(str(self.folder / DECODER_FILE), options, providers=providers)

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["classes"] or ["foreground"])

    def logits(self, pixels: np.ndarray, boxes: np.ndarray | None = None) -> np.ndarray:
        """(B, 3, S, S) normalised float32 -> (B, C, S/4, S/4) logits."""
        features = self.encoder.run(None, {"pixel_values": np.ascontiguousarray(pixels, dtype=np.float32)})
        feeds = dict(zip(self.meta["decoder"]["inputs"], features))
        if self.kind == "box":
            if boxes is None:
                raise UserError("this export takes a box prompt: add --box X0 Y0 X1 Y1", self.folder)
            feeds["boxes"] = boxes.astype(np.float32)
        return self.decoder.run(None, feeds)[0]


def check_export_settings(folder: Path, image_size: int | None, box, point) -> None:
    """What the torch-only options would change, refused for an export folder before any work."""
    from samadapt.export.onnx_folder import read_onnx_folder

    meta = read_onnx_folder(folder)
    if image_size is not None and image_size != int(meta["image_size"]):
        raise UserError(f"--image-size {image_size}: the export was made at {meta['image_size']} px "
                        "(export again with --image-size)", folder)
    if point is not None:
        raise UserError("--point: ONNX exports take no point prompts (a run: none; plain weights: --box)", folder)
    if meta["kind"] == "class-prompts" and box is not None:
        raise UserError("--box: this export segments its classes without prompts: drop --box", folder)
    if meta["kind"] == "box" and box is None:
        raise UserError("this export of plain weights needs a box prompt: add --box X0 Y0 X1 Y1", folder)


def label_image(segmenter: OnnxSegmenter, image: np.ndarray, box=None, timer=None) -> np.ndarray:
    """(H, W) uint8 labels: class indices for a run's export, 0/1 for a box export."""
    from samadapt.data.preprocess import prepare_image, restore_logits
    from samadapt.modeling.class_prompts import logits_to_index

    start = time.perf_counter()
    pixels, letterbox = prepare_image(image, segmenter.image_size)
    boxes = None
    if box is not None:
        corners = letterbox.to_model_xy(np.asarray(box, dtype=np.float64).reshape(2, 2)).reshape(1, 1, 4)
        boxes = corners.astype(np.float32)
    logits = segmenter.logits(pixels[None].numpy(), boxes)[0]  # (C, h, w)
    if timer is not None:
        start = timer.add("onnxruntime", start)
    full = restore_logits(torch.from_numpy(logits), letterbox)  # (C, H, W)
    labels = logits_to_index(full[None])[0]  # (H, W), as the torch backend labels
    if timer is not None:
        timer.add("resize", start)
    return labels.to(torch.uint8).numpy()


def run_predict_onnx(folder: Path, inputs: list[Path], out_dir: Path, box=None, threads: int | None = None,
                     progress: bool = True) -> dict:
    """Segment every input with the export in `folder`; outputs as `predict` writes them (index masks
    and classes.json for a run's export, 0/255 masks for a box export)."""
    from samadapt.inference.predict import CLASSES_FILE, Prompt, _segment_folder, check_inputs, classes_json

    check_inputs(inputs, Prompt(box=tuple(box)) if box is not None else None)
    segmenter = OnnxSegmenter(folder, threads=threads)
    classes = segmenter.meta["classes"]
    extra = {CLASSES_FILE: classes_json(classes)} if classes else None
    counts, timer = _segment_folder(inputs, out_dir, lambda image, t: label_image(segmenter, image, box, t), progress,
                                    extra, png_scale=1 if classes else 255)
    names = segmenter.class_names
    return {"images": len(inputs), "seconds": dict(timer.seconds), "classes": classes,
            "foreground_fraction": {image: {name: float(v[k]) for k, name in enumerate(names, start=1)}
                                    for image, v in counts.items()}}
