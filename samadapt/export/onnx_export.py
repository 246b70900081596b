"""Export a fine-tuning run (or plain SAM/SAM2 weights) to ONNX: image encoder + mask decoder.

The graphs are traced by `torch.onnx.export` with the TorchScript exporter (`dynamo=False`): it
exports transformers' Sam2Model/SamModel parts as they are, with the batch axis dynamic. The
encoder graph is `SegmentAnything.encode` (SAM2: the stride-16 map with `no_mem_embed` and the
decoder's `conv_s0`/`conv_s1` projections of the stride-4/8 maps, exactly what the mask decoder
takes). The decoder graph of a fine-tuning run is `ClassPromptSegmenter`'s decoding step with its class
prompts as constants (and the presence gate, when the run trained one); of a few-shot run, the same
with the tokens its prompter makes of the stored prototypes; for plain weights it takes one box per
image. After writing, both graphs are run through onnxruntime on a random batch of two and
compared with PyTorch; the relative errors are stored in samadapt-onnx.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from samadapt.errors import UserError, require_module
from samadapt.export.onnx_folder import (DECODER_FILE, ENCODER_FILE, FORMAT, FORMAT_VERSION, METADATA_FILE,
                                         stamp_file)
from samadapt.modeling.segment_anything import ImageFeatures

OPSET = 17
EXPORTER = "torchscript"
PARITY_TOLERANCE = 1e-4  # relative error in fp32: max |onnx - torch| / max |torch|
QUANTIZATIONS = ("none", "int8")


def feature_names(family: str) -> list[str]:
    return ["embedding", "high_res_s4", "high_res_s8"] if family == "sam2" else ["embedding"]


class EncoderGraph(nn.Module):
    """pixel_values (B, 3, S, S) -> the tensors of `ImageFeatures`, flat."""

    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, pixel_values):
        features = self.base.encode(pixel_values)
        return (features.embedding, *(features.high_res or ()))


def _features(embedding, high_res) -> ImageFeatures:
    return ImageFeatures(embedding, tuple(high_res) if high_res else None)


class ClassDecoderGraph(nn.Module):
    """Features -> logits (B, C, S/4, S/4): one query per class with fixed prompt tokens (C, T, 256),
    a fine-tuning run's class prompts or the tokens a few-shot run's prompter makes of its
    prototypes; `presence`: gate absent classes as `ClassPromptSegmenter` does in eval mode."""

    def __init__(self, base, tokens: torch.Tensor, presence: bool = False):
        super().__init__()
        self.base, self.presence = base, presence
        self.register_buffer("tokens", tokens.detach().clone())

    def forward(self, embedding, *high_res):
        from samadapt.modeling.class_prompts import gate_absent

        tokens = self.tokens.unsqueeze(0).expand(embedding.shape[0], -1, -1, -1)  # (B, C, T, 256)
        out = self.base.decode(_features(embedding, high_res), prompt_tokens=tokens, multimask=False)
        logits = out.logits[:, :, 0]
        return gate_absent(logits, out.object_score[..., 0]) if self.presence else logits


class BoxDecoderGraph(nn.Module):
    """Features + boxes (B, 1, 4) in model pixels -> logits (B, 1, S/4, S/4) of plain SAM/SAM2."""

    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, embedding, *rest):
        *high_res, boxes = rest
        return self.base.decode(_features(embedding, high_res), boxes=boxes, multimask=False).logits[:, :, 0]


def _is_run_model_folder(path: Path) -> bool:
    """RUN_DIR/model itself: a model folder that carries a run's class prompts."""
    from samadapt.modeling.model_folder import METADATA_FILE, read_metadata

    return (path / METADATA_FILE).is_file() and "finetune" in read_metadata(path).get("extra_config", {})


def load_export_source(source: str | Path, image_size: int | None):
    """(kind, SegmentAnything, decoder graph, facts) for a fine-tuning or few-shot run folder, or
    for weights (file or model folder)."""
    from samadapt.finetune.runs import is_run_dir, load_finetune_run

    path = Path(source)
    if not path.exists():
        raise UserError("not found: give a fine-tuning or few-shot run folder or a weights file/folder", path)
    if _is_fewshot_run(path):
        if image_size is not None:
            raise UserError(f"--image-size {image_size}: a few-shot run is exported at its own size", path)
        from samadapt.fewshot.predict import load_fewshot_run

        run = load_fewshot_run(path)
        with torch.no_grad():
            tokens = run.segmenter.prompter(run.prototypes, 1)[0]  # (C, T, 256)
        base = run.segmenter.sam.eval()
        return "class-prompts", base, ClassDecoderGraph(base, tokens), {"classes": run.classes, "presence": False}
    if is_run_dir(path) or _is_run_model_folder(path):
        run = load_finetune_run(path, image_size=image_size)
        if run.model.kind != "sam":
            raise UserError(f"the {run.model.name} baseline is a U-Net, not Segment Anything: ONNX export covers "
                            "SAM/SAM2 runs (export it with torch.onnx yourself)", path)
        model = run.model.eval()
        return "class-prompts", model.base, ClassDecoderGraph(model.base, model.class_prompts, model.presence), {
            "classes": run.class_names, "presence": bool(model.presence)}
    from samadapt.modeling.loading import load_model

    base = load_model(weights=path, image_size=image_size).eval()
    if hasattr(base.mask_decoder, "dynamic_multimask_via_stability"):
        base.mask_decoder.dynamic_multimask_via_stability = False  # a traced graph keeps one branch
    return "box", base, BoxDecoderGraph(base), {"classes": None, "presence": False}


def _is_fewshot_run(path: Path) -> bool:
    from samadapt.modeling.model_folder import METADATA_FILE, read_metadata

    folder = path / "model"
    return (folder / METADATA_FILE).is_file() and "fewshot" in read_metadata(folder).get("extra_config", {})


def export_graph(graph: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str]) -> None:
    """Trace `graph` on `args` into the .onnx file `path`, axis 0 of every input and output dynamic."""
    import warnings

    axes = {name: {0: "batch"} for name in inputs + outputs}
    with warnings.catch_warnings():  # the tracer warns about every shape check it turns into a constant
        warnings.simplefilter("ignore")
        torch.onnx.export(graph.eval(), args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)


def _relative_error(actual: np.ndarray, expected: torch.Tensor) -> float:
    expected = expected.detach().numpy()
    return float(np.abs(actual - expected).max() / max(float(np.abs(expected).max()), 1e-12))


def quantize_encoder(fp32: Path, out: Path) -> None:
    """int8 dynamic quantisation of the encoder's matrix products (weights int8 per tensor,
    activations quantised on the fly): onnxruntime's `quantize_dynamic`, about 4x smaller."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # its advice to pre-process the graph, on the root logger
    try:
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        logging.disable(logging.NOTSET)


def export_onnx(source: str | Path, out: str | Path, image_size: int | None = None, quantize: str = "none") -> dict:
    """Write the export folder `out` (see `samadapt.export.onnx_folder`); returns its metadata.
    quantize "int8": the encoder's linear layers in int8 (opt-in; parity is then not 1e-4)."""
    from samadapt.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
    from samadapt.engine.atomic import check_output_dir, sha256_file, staged_dir

    if quantize not in QUANTIZATIONS:
        raise UserError(f"--quantize {quantize!r}: choose {', '.join(QUANTIZATIONS)}")
    require_module("onnx", "onnx", "ONNX export")
    require_module("onnxruntime", "onnx", "checking the export")
    out = check_output_dir(out)
    kind, base, decoder, facts = load_export_source(source, image_size)
    decoder = decoder.eval()
    size, names = base.image_size, feature_names(base.family)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, size, size, generator=generator)  # (2, 3, S, S)
    with torch.no_grad():
        features = EncoderGraph(base)(pixels[:1])
        boxes = torch.tensor([[[0.1, 0.2, 0.7, 0.9]]]) * size  # (1, 1, 4)
        decoder_args = features + ((boxes,) if kind == "box" else ())
    decoder_inputs = names + (["boxes"] if kind == "box" else [])
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "model": base.name,
            "family": base.family, "image_size": size, "classes": facts["classes"], "presence": facts["presence"],
            "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "scale": "[0, 1] first",
                              "geometry": "longer side resized to image_size, padded bottom/right, padding 0 after normalising"},
            "encoder": {"inputs": ["pixel_values"], "outputs": names},
            "decoder": {"inputs": decoder_inputs, "outputs": ["logits"]},
            "encoder_quantization": quantize,
            "exporter": f"torch.onnx.export ({EXPORTER}, opset {OPSET}), torch {torch.__version__}",
            "source": str(Path(source).resolve()), "files": {}}
    with staged_dir(out) as stage:
        if quantize == "int8":
            export_graph(EncoderGraph(base), (pixels[:1],), stage / "encoder.fp32.onnx", ["pixel_values"], names)
            quantize_encoder(stage / "encoder.fp32.onnx", stage / ENCODER_FILE)
            (stage / "encoder.fp32.onnx").unlink()
        else:
            export_graph(EncoderGraph(base), (pixels[:1],), stage / ENCODER_FILE, ["pixel_values"], names)
        export_graph(decoder, decoder_args, stage / DECODER_FILE, decoder_inputs, ["logits"])
        for file, part in ((ENCODER_FILE, "encoder"), (DECODER_FILE, "decoder")):
            stamp_file(stage / file, base.name, size, part)
            meta["files"][file] = sha256_file(stage / file)
        meta["parity"] = measure_parity(stage, base, decoder, pixels, names, kind)
        (stage / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


@torch.no_grad()
def measure_parity(folder: Path, base, decoder: nn.Module, pixels: torch.Tensor, names: list[str], kind: str) -> dict:
    """Relative error of both graphs in onnxruntime against PyTorch on a batch of two (the graphs
    were traced with one image, so this also checks the dynamic batch)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    encoder = ort.InferenceSession(str(folder / ENCODER_FILE), options, providers=["CPUExecutionProvider"])
    ort_features = encoder.run(None, {"pixel_values": pixels.numpy()})
    features = EncoderGraph(base)(pixels)
    feeds = dict(zip(names, ort_features))
    args = features
    if kind == "box":
        boxes = torch.tensor([[[0.1, 0.2, 0.7, 0.9]], [[0.3, 0.1, 0.9, 0.6]]]) * base.image_size
        feeds["boxes"], args = boxes.numpy(), features + (boxes,)
    session = ort.InferenceSession(str(folder / DECODER_FILE), options, providers=["CPUExecutionProvider"])
    logits, expected = session.run(None, feeds)[0], decoder(*args)
    both = float(((logits > 0) & (expected > 0).numpy()).sum())
    either = float(((logits > 0) | (expected > 0).numpy()).sum())
    return {"encoder_relative_error": max(_relative_error(a, e) for a, e in zip(ort_features, features)),
            "decoder_relative_error": _relative_error(logits, expected), "batch": int(pixels.shape[0]),
            "mask_iou": both / either if either else 1.0}
