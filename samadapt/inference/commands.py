"""CLI: `samadapt predict`."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)


def predict(
    input: Path = typer.Option(..., "--input", "-i", help="An image (PNG, JPEG, TIFF, BMP, GIF) or a folder of them."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for <stem>_mask.png and <stem>_overlay.png."),
    model: str = typer.Option("sam2-hiera-tiny", "--model", "-m", help="Model name (see `samadapt models`), a samadapt checkpoint folder, or a fine-tuning run folder (multi-class index masks, no prompt)."),
    weights: Path | None = typer.Option(None, "--weights", "-w", help="Meta .pt/.pth file, Hugging Face folder or samadapt checkpoint folder."),
    image_size: int | None = typer.Option(None, "--image-size", help="Model input size in pixels (default: the checkpoint's, else 1024)."),
    box: tuple[float, float, float, float] | None = typer.Option(None, "--box", help="Box prompt x0 y0 x1 y1 in image pixels."),
    point: tuple[float, float] | None = typer.Option(None, "--point", help="Positive point prompt x y in image pixels."),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice)."),
    fast: bool = typer.Option(True, "--fast/--no-fast", help="Fast SAM2 encoder (same outputs within 1e-4; --no-fast: the plain model)."),
    compile: bool = typer.Option(False, "--compile/--no-compile", help="Also torch.compile the fast encoder (minutes of compiling first; pays off only on many images)."),
    precision: str = typer.Option("fp32", "--precision", help="Fast encoder arithmetic: fp32 (same outputs within 1e-4) or bf16 (1.6-1.9x faster on CPUs with bf16 units, ~1e-2 feature error)."),
) -> None:
    """Segment images with SAM2/SAM: writes a mask PNG (same size as the input) and an overlay per image."""
    import json

    import torch

    from samadapt.inference.predict import Prompt, collect_images, run_predict
    from samadapt.models.loading import load_model

    from samadapt.engine.atomic import check_output_dir
    from samadapt.errors import UserError
    from samadapt.inference.predict import check_inputs

    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads}: must be at least 1")
    if threads:
        torch.set_num_threads(threads)
    if image_size is not None and image_size <= 0:
        raise UserError(f"--image-size {image_size}: must be a positive number of pixels")
    from samadapt.models.fast.encoder import PRECISIONS

    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    if precision != "fp32" and not fast:
        raise UserError(f"--precision {precision} needs the fast encoder: drop --no-fast")
    inputs = collect_images(input)  # fail on bad input before the (slow) model build
    check_output_dir(out)
    from samadapt.finetune.runs import is_run_dir

    if is_run_dir(model):  # a fine-tuned run: its learned class prompts segment every class at once
        _predict_with_run(Path(model), inputs, out, weights, image_size, box, point)
        return
    prompt = Prompt(box=tuple(box) if box else None, point=tuple(point) if point else None)
    check_inputs(inputs, prompt)  # unreadable images and prompts outside them, before the model
    from samadapt.models.fast import accelerate

    net = accelerate(load_model(model, weights=weights, image_size=image_size).eval(), fast=fast, compile=compile,
                     precision=precision)
    summary = run_predict(net, inputs, out, prompt)
    seconds = summary["seconds"]
    total = sum(seconds.values())
    print(f"wrote {2 * summary['images']} files to {out} ({total / max(1, summary['images']):.2f} s per image; "
          + ", ".join(f"{k} {v:.2f}s" for k, v in seconds.items()) + ")")
    if len(inputs) == 1:
        print(json.dumps({"foreground_fraction": summary["foreground_fraction"]}))


def _predict_with_run(run_dir: Path, inputs: list[Path], out: Path, weights, image_size, box, point) -> None:
    import json

    from samadapt.errors import UserError
    from samadapt.finetune.runs import load_run
    from samadapt.inference.predict import run_predict_classes

    if weights is not None or box is not None or point is not None:
        raise UserError("a fine-tuning run segments without prompts or --weights: drop --weights/--box/--point", run_dir)
    from samadapt.inference.predict import check_inputs

    check_inputs(inputs)
    run = load_run(run_dir, image_size=image_size)
    summary = run_predict_classes(run.model, inputs, out)
    total = sum(summary["seconds"].values())
    print(f"wrote {2 * summary['images']} files and classes.json to {out} "
          f"({total / max(1, summary['images']):.2f} s per image; classes {', '.join(run.class_names)})")
    if len(inputs) == 1:
        print(json.dumps({"foreground_fraction": summary["foreground_fraction"]}))
