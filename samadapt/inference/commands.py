"""CLI: `samadapt predict`."""

from __future__ import annotations

from pathlib import Path

import typer

from samadapt.modeling.sources import INIT_DEFAULT, INIT_OPTION, init_help

# Prompted segmentation needs a trained mask decoder: an MAE run has none, and a fine-tuning run
# is used whole with --model RUN (its class prompts) rather than as starting weights.
PREDICT_INIT = ("random", "sam2", "hf", "ckpt")
DEFAULT_MODEL = "sam2-hiera-tiny"
BACKENDS = ("torch", "onnxruntime")


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)


def predict(
    input: Path = typer.Option(..., "--input", "-i", help="An image (PNG, JPEG, TIFF, BMP, GIF) or a folder of them."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for <stem>_mask.png and <stem>_overlay.png."),
    model: str | None = typer.Option(None, "--model", "-m", help=f"Model name (see `samadapt models`; default: the variant of the --init weights, else {DEFAULT_MODEL}), or a fine-tuning run folder (multi-class index masks and classes.json, no prompt)."),
    init: str = typer.Option(INIT_DEFAULT, INIT_OPTION, help=init_help(PREDICT_INIT) + " random gives meaningless masks."),
    image_size: int | None = typer.Option(None, "--image-size", help="Model input size in pixels (default: the checkpoint's, else 1024)."),
    box: tuple[float, float, float, float] | None = typer.Option(None, "--box", metavar="X0 Y0 X1 Y1", help="Box prompt: four separate numbers in image pixels, e.g. --box 40 60 200 220."),
    point: tuple[float, float] | None = typer.Option(None, "--point", metavar="X Y", help="Positive point prompt: two separate numbers in image pixels, e.g. --point 120 140."),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice)."),
    fast: bool = typer.Option(True, "--fast/--no-fast", help="Fast SAM2 encoder (same outputs within 1e-4; --no-fast: the plain model)."),
    compile: bool = typer.Option(False, "--compile/--no-compile", help="Also torch.compile the fast encoder (minutes of compiling first; pays off only on many images)."),
    precision: str = typer.Option("fp32", "--precision", help="Fast encoder arithmetic: fp32 (same outputs within 1e-4) or bf16 (faster on CPUs with bf16 units, less exact; docs/benchmarks.md has both measured)."),
    backend: str = typer.Option("torch", "--backend", help="torch, or onnxruntime: --model is then a folder from `samadapt export --format onnx`."),
) -> None:
    """Segment images with SAM2/SAM: writes a mask PNG (same size as the input) and an overlay per image."""
    import json

    import torch

    from samadapt.engine.atomic import check_output_dir
    from samadapt.errors import UserError
    from samadapt.finetune.runs import is_run_dir
    from samadapt.inference.predict import Prompt, check_inputs, collect_images, run_predict
    from samadapt.modeling.fast.encoder import PRECISIONS
    from samadapt.modeling.sources import parse_init

    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads}: must be at least 1")
    if threads:
        torch.set_num_threads(threads)
    if image_size is not None and image_size <= 0:
        raise UserError(f"--image-size {image_size}: must be a positive number of pixels")
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    if precision != "fp32" and not fast:
        raise UserError(f"--precision {precision} needs the fast encoder: drop --no-fast")
    if backend not in BACKENDS:
        raise UserError(f"--backend {backend!r}: choose {', '.join(BACKENDS)}")
    source = parse_init(init, PREDICT_INIT, command="predict")
    inputs = collect_images(input)  # fail on bad input before the (slow) model build
    check_output_dir(out)
    if backend == "onnxruntime":
        _predict_with_onnx(model, source, inputs, out, image_size, box, point, threads)
        return
    if model is not None and is_run_dir(model):  # a trained run: its learned class prompts segment every class
        _predict_with_run(Path(model), inputs, out, source, image_size, box, point)
        return
    prompt = Prompt(box=tuple(box) if box else None, point=tuple(point) if point else None)
    check_inputs(inputs, prompt)  # unreadable images and prompts outside them, before the model
    net = _load_promptable(model, source, image_size, fast, compile, precision)
    summary = run_predict(net, inputs, out, prompt)
    seconds = summary["seconds"]
    total = sum(seconds.values())
    print(f"wrote {2 * summary['images']} files to {out} ({total / max(1, summary['images']):.2f} s per image; "
          + ", ".join(f"{k} {v:.2f}s" for k, v in seconds.items()) + ")")
    if len(inputs) == 1:
        print(json.dumps({"foreground_fraction": summary["foreground_fraction"]}))


def _predict_with_onnx(model: str | None, source, inputs: list[Path], out: Path, image_size, box, point,
                       threads: int | None) -> None:
    import json

    from samadapt.errors import UserError
    from samadapt.export.onnx_folder import is_onnx_folder
    from samadapt.inference.onnx_backend import check_export_settings, run_predict_onnx
    from samadapt.inference.predict import Prompt, check_inputs

    if model is None or not is_onnx_folder(model):
        raise UserError("--backend onnxruntime: --model must be a folder from `samadapt export --format onnx`"
                        + (f", and {model} is not one" if model else ""))
    if not source.is_random:
        raise UserError(f"--backend onnxruntime: the export holds its weights: drop {INIT_OPTION}", model)
    check_export_settings(Path(model), image_size, box, point)
    check_inputs(inputs, Prompt(box=tuple(box) if box else None))
    summary = run_predict_onnx(Path(model), inputs, out, box=tuple(box) if box else None, threads=threads)
    total = sum(summary["seconds"].values())
    print(f"wrote {2 * summary['images']} files to {out} with onnxruntime "
          f"({total / max(1, summary['images']):.2f} s per image)")
    if len(inputs) == 1:
        print(json.dumps({"foreground_fraction": summary["foreground_fraction"]}))


def _load_promptable(model: str | None, source, image_size: int | None, fast: bool, compile: bool, precision: str):
    """The Segment Anything model `--model`/`--init` name, accelerated, in eval mode; random
    weights are announced on stderr."""
    from samadapt.errors import UserError
    from samadapt.finetune.runs import is_run_dir, refuse_fewshot_run
    from samadapt.modeling.fast import accelerate
    from samadapt.modeling.loading import load_model
    from samadapt.modeling.sources import warn_random_weights, weights_path

    if source.kind == "ckpt":
        refuse_fewshot_run(source.path)
    if source.kind == "ckpt" and is_run_dir(source.path):
        raise UserError(f"a fine-tuning run segments with its class prompts: use --model {source.path}", source.path)
    weights = weights_path(source)
    net = load_model(model or (None if weights else DEFAULT_MODEL), weights=weights, image_size=image_size)
    if weights is None:
        warn_random_weights(net.name, "the masks")
    return accelerate(net.eval(), fast=fast, compile=compile, precision=precision)


def _predict_with_run(run_dir: Path, inputs: list[Path], out: Path, source, image_size, box, point) -> None:
    import json

    from samadapt.errors import UserError
    from samadapt.finetune.runs import load_finetune_run, refuse_fewshot_run
    from samadapt.inference.predict import check_inputs, run_predict_classes

    refuse_fewshot_run(run_dir)
    if not source.is_random or box is not None or point is not None:
        raise UserError(f"a fine-tuning run segments without prompts or {INIT_OPTION}: drop "
                        f"{INIT_OPTION}/--box/--point", run_dir)
    check_inputs(inputs)
    run = load_finetune_run(run_dir, image_size=image_size)
    summary = run_predict_classes(run.model, inputs, out)
    total = sum(summary["seconds"].values())
    print(f"wrote {2 * summary['images']} files and classes.json to {out} "
          f"({total / max(1, summary['images']):.2f} s per image; classes {', '.join(run.class_names)})")
    if len(inputs) == 1:
        print(json.dumps({"foreground_fraction": summary["foreground_fraction"]}))
