"""CLI: `samadapt export` (a run or weights as ONNX, for onnxruntime)."""

from __future__ import annotations

from pathlib import Path

import typer

FORMATS = ("onnx",)


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    model: Path = typer.Option(..., "--model", "-m", help="A fine-tuning or few-shot run folder (class prompts or prototype tokens baked into the decoder), or SAM/SAM2 weights (file or model folder; the decoder then takes a box)."),
    out: Path = typer.Option(..., "--out", "-o", help="Export folder: encoder.onnx, decoder.onnx, samadapt-onnx.json."),
    format: str = typer.Option("onnx", "--format", help="Export format: onnx."),
    image_size: int | None = typer.Option(None, "--image-size", help="Input size to export at (default: the model's own)."),
    quantize: str = typer.Option("none", "--quantize", help="none, or int8: the encoder's linear layers in int8 (onnxruntime dynamic quantisation; ~4x smaller, not exact)."),
) -> None:
    """Export the image encoder and mask decoder as ONNX (dynamic batch), checked against PyTorch in onnxruntime."""
    from samadapt.errors import UserError, warn
    from samadapt.engine.run_folder import run_folder
    from samadapt.export.onnx_export import PARITY_TOLERANCE, export_onnx

    if format not in FORMATS:
        raise UserError(f"--format {format!r}: choose {', '.join(FORMATS)}")
    if image_size is not None and image_size <= 0:
        raise UserError(f"--image-size {image_size}: must be a positive number of pixels")
    with run_folder(out, models=[model]):
        meta = export_onnx(model, out, image_size=image_size, quantize=quantize)
    parity = meta["parity"]
    print(f"exported {meta['model']} at {meta['image_size']} px ({meta['kind']} decoder"
          + (f", classes {', '.join(meta['classes'])}" if meta["classes"] else "") + f") to {out}; onnxruntime vs "
          f"PyTorch relative error: encoder {parity['encoder_relative_error']:.1e}, decoder "
          f"{parity['decoder_relative_error']:.1e}, mask IoU {parity['mask_iou']:.4f}"
          + (" (int8 encoder)" if quantize == "int8" else ""))
    worst = max(parity["encoder_relative_error"], parity["decoder_relative_error"])
    if worst > PARITY_TOLERANCE and quantize == "none":
        warn(f"onnxruntime differs from PyTorch by {worst:.1e} (relative), more than {PARITY_TOLERANCE:g}")
    print(f"next: samadapt predict --backend onnxruntime --model {out} --input IMAGES --out MASKS")
