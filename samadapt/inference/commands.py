"""CLI: `samadapt predict` and `samadapt propagate`."""

from __future__ import annotations

from pathlib import Path

import typer

from samadapt.inference.config import DEFAULT_MEMORY_MODEL, PROPAGATE_INIT, PropagateConfig
from samadapt.modeling.sources import INIT_DEFAULT, INIT_OPTION, init_help
from samadapt.options import config_option

# Prompted segmentation needs a trained mask decoder: an MAE run has none, and a fine-tuning run
# is used whole with --model RUN (its class prompts) rather than as starting weights.
PREDICT_INIT = ("random", "sam2", "hf", "ckpt")
DEFAULT_MODEL = "sam2-hiera-tiny"
BACKENDS = ("torch", "onnxruntime")
# shared by predict and propagate (one option, one default)
FAST_OPTION = typer.Option(True, "--fast/--no-fast", help="Fast SAM2 encoder (same outputs within 1e-4; --no-fast: the plain model).")
PRECISION_OPTION = typer.Option("fp32", "--precision", help="Fast encoder arithmetic: fp32 (same outputs within 1e-4) or bf16 (faster on CPUs with bf16 units, less exact; docs/benchmarks.md has both measured).")


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
    app.command("propagate", cls=_PromptCommand)(propagate)


def predict(
    input: Path = typer.Option(..., "--input", "-i", help="An image (PNG, JPEG, TIFF, BMP, GIF) or a folder of them."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for <stem>_mask.png and <stem>_overlay.png."),
    model: str | None = typer.Option(None, "--model", "-m", help=f"Model name (see `samadapt models`; default: the variant of the --init weights, else {DEFAULT_MODEL}), or a fine-tuning run folder (multi-class index masks and classes.json, no prompt)."),
    init: str = typer.Option(INIT_DEFAULT, INIT_OPTION, help=init_help(PREDICT_INIT) + " random gives meaningless masks."),
    image_size: int | None = typer.Option(None, "--image-size", help="Model input size in pixels (default: the checkpoint's, else 1024)."),
    box: tuple[float, float, float, float] | None = typer.Option(None, "--box", metavar="X0 Y0 X1 Y1", help="Box prompt: four separate numbers in image pixels, e.g. --box 40 60 200 220."),
    point: tuple[float, float] | None = typer.Option(None, "--point", metavar="X Y", help="Positive point prompt: two separate numbers in image pixels, e.g. --point 120 140."),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice)."),
    fast: bool = FAST_OPTION,
    compile: bool = typer.Option(False, "--compile/--no-compile", help="Also torch.compile the fast encoder (minutes of compiling first; pays off only on many images)."),
    precision: str = PRECISION_OPTION,
    backend: str = typer.Option("torch", "--backend", help="torch, or onnxruntime: --model is then a folder from `samadapt export --format onnx`."),
) -> None:
    """Segment images with SAM2/SAM: writes a mask PNG (same size as the input) and an overlay per image."""
    import json

    import torch

    from samadapt.engine.atomic import check_output_dir
    from samadapt.engine.run_folder import run_folder
    from samadapt.errors import UserError
    from samadapt.finetune.runs import is_run_dir
    from samadapt.inference.predict import Prompt, check_inputs, collect_images, run_predict
    from samadapt.modeling.sources import parse_init

    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads}: must be at least 1")
    if threads:
        torch.set_num_threads(threads)
    if image_size is not None and image_size <= 0:
        raise UserError(f"--image-size {image_size}: must be a positive number of pixels")
    _check_precision(precision, fast)
    if backend not in BACKENDS:
        raise UserError(f"--backend {backend!r}: choose {', '.join(BACKENDS)}")
    source = parse_init(init, PREDICT_INIT, command="predict")
    inputs = collect_images(input)  # fail on bad input before the (slow) model build
    check_output_dir(out)
    with run_folder(out, inputs=[input], models=[model]):  # one writer; marked incomplete until every file is in
        if backend == "onnxruntime":
            _predict_with_onnx(model, source, inputs, out, image_size, box, point, threads)
            return
        if model is not None and is_run_dir(model):  # a trained run: its learned class prompts segment every class
            _predict_with_run(Path(model), inputs, out, source, image_size, box, point,
                              dict(fast=fast, compile=compile, precision=precision))
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


def _predict_with_run(run_dir: Path, inputs: list[Path], out: Path, source, image_size, box, point,
                      encoder: dict) -> None:
    """A fine-tuning run's class prompts on every input; `encoder` holds the fast-encoder options
    (fast, compile, precision), applied to a SAM2 run's image encoder."""
    import json

    from samadapt.errors import UserError
    from samadapt.finetune.runs import load_finetune_run, refuse_fewshot_run
    from samadapt.inference.predict import check_inputs, run_predict_classes
    from samadapt.modeling.fast import accelerate

    refuse_fewshot_run(run_dir)
    if not source.is_random or box is not None or point is not None:
        raise UserError(f"a fine-tuning run segments without prompts or {INIT_OPTION}: drop "
                        f"{INIT_OPTION}/--box/--point", run_dir)
    check_inputs(inputs)
    run = load_finetune_run(run_dir, image_size=image_size)
    base = getattr(run.model, "base", None)  # the promptable SAM2/SAM under the class prompts; None: U-Net
    if base is not None:
        accelerate(base, **encoder)
    elif encoder["precision"] != "fp32":
        raise UserError(f"--precision {encoder['precision']} applies to SAM2 image encoders, and this run's "
                        f"model is a {run.model.kind}", run_dir)
    summary = run_predict_classes(run.model, inputs, out)
    total = sum(summary["seconds"].values())
    print(f"wrote {2 * summary['images']} files and classes.json to {out} "
          f"({total / max(1, summary['images']):.2f} s per image; classes {', '.join(run.class_names)})")
    if len(inputs) == 1:
        print(json.dumps({"foreground_fraction": summary["foreground_fraction"]}))


# Repeatable options of several numbers each (`--box Z X0 Y0 X1 Y1 --box ...`): typer has no list of
# tuples, click has (nargs with multiple); typer's own coercion would expect a flat list, so these
# two turn click's tuples into tuples of floats themselves.
PROMPT_NARGS = {"box": 5, "point": 4}


class _ClickTuples:
    @staticmethod
    def coerce(value, param=None, ctx=None):
        out = []
        for numbers in value or ():
            try:
                out.append(tuple(float(v) for v in numbers))
            except ValueError:
                raise typer.BadParameter(f"{' '.join(numbers)}: expected numbers", ctx=ctx, param=param) from None
        return out


class _PromptCommand(typer.core.TyperCommand):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.name in PROMPT_NARGS:
                param.nargs = PROMPT_NARGS[param.name]
                param.get_runtime_param = _ClickTuples


def propagate(
    input: Path = typer.Option(..., "--input", "-i", help="A NIfTI volume (.nii, .nii.gz; slices along its last axis) or a folder of 2D frames (sorted by name)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output label volume (.nii/.nii.gz, the input's shape, affine and header); for a folder of frames, a folder of <stem>.png labels."),
    labels: Path | None = typer.Option(None, "--labels", help="Prompt labels: a label volume shaped like the input (its non-empty slices are the key slices, one object per class) or a 2D label image for one --key-slice."),
    key_slice: list[int] | None = typer.Option(None, "--key-slice", metavar="Z", help="Only these slices of --labels prompt (repeatable; default: every non-empty slice)."),
    box: list[float] | None = typer.Option(None, "--box", metavar="Z X0 Y0 X1 Y1", help="Box prompt on slice Z in slice pixels (repeatable; one object, label 1)."),
    point: list[float] | None = typer.Option(None, "--point", metavar="Z X Y LABEL", help="Point prompt on slice Z, LABEL 1 on the object or 0 off it (repeatable; same object as --box)."),
    model: str | None = typer.Option(None, "--model", "-m", help=f"Model name (see `samadapt models`; a SAM2/SAM2.1 variant; default: the variant of the {INIT_OPTION} weights, else {DEFAULT_MEMORY_MODEL})."),
    init: str = config_option(PropagateConfig, "init", help=init_help(PROPAGATE_INIT) + " The weights must include SAM2's memory (Meta's sam2*_hiera_*.pt or a Hugging Face sam2_video folder); random gives meaningless masks."),
    image_size: int | None = config_option(PropagateConfig, "image_size", help="Model input size in pixels (default: the checkpoint's, else 1024)."),
    stop_when_absent: bool = typer.Option(PropagateConfig.stop_when_absent, "--stop-when-absent/--keep-tracking", help="Stop an object, in each direction, on the first slice its object score calls empty (until its next key slice); --keep-tracking follows it to the ends as SAM2 does."),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice)."),
    fast: bool = FAST_OPTION,
    precision: str = PRECISION_OPTION,
) -> None:
    """Segment a volume from a few prompted slices with SAM2's memory: forward and backward from the key slices."""
    import contextlib
    import time

    import torch

    from samadapt.engine.run_folder import run_folder
    from samadapt.errors import UserError
    from samadapt.inference.propagate_volume import (
        check_output, prompts_from_clicks, prompts_from_labels, read_stack, segment_stack, write_labels,
    )
    from samadapt.modeling.sources import parse_init

    config = PropagateConfig(init=init, image_size=image_size, stop_when_absent=stop_when_absent)
    config.validate()
    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads}: must be at least 1")
    _check_precision(precision, fast)
    source = parse_init(init, PROPAGATE_INIT, command="propagate",
                        reasons={"mae": "an MAE run holds an encoder, not SAM2's memory"})
    if model is not None and Path(model).is_dir():
        raise UserError("propagate takes a model name for --model; give trained weights with "
                        f"{INIT_OPTION} sam2:PATH or ckpt:DIR", model)
    if labels is not None and (box or point):
        raise UserError("give --labels or --box/--point prompts, not both")
    if key_slice and labels is None:
        raise UserError("--key-slice chooses slices of --labels: give --labels FILE")
    stack = read_stack(input)
    if labels is not None:
        prompts, label_slices = prompts_from_labels(labels, stack, key_slice or ())
    elif box or point:
        prompts, label_slices = prompts_from_clicks(_whole_slices(box, "--box"), _whole_slices(point, "--point"), stack), {}
    else:
        raise UserError("no prompt: give --labels FILE, --box Z X0 Y0 X1 Y1 or --point Z X Y 1")
    out = check_output(out, stack)
    if any(given is not None and Path(given).resolve() == out.resolve() for given in (input, labels)):
        raise UserError("the output would overwrite an input: choose another --out", out)
    if threads:
        torch.set_num_threads(threads)
    # a folder of frame labels is held as a run folder (lock, incomplete marker, not inside the input);
    # a label volume is one file, replaced atomically
    holder = run_folder(out, inputs=[input]) if stack.volume is None else contextlib.nullcontext()
    with holder:
        net = _load_memory_model(model, source, image_size, fast, precision)
        start = time.perf_counter()
        result = segment_stack(net, stack, prompts, label_slices, stop_when_absent=stop_when_absent,
                               progress=_progress_bar)
        seconds = time.perf_counter() - start
        written = write_labels(out, result, stack)
    filled = int((result.reshape(result.shape[0], -1) > 0).any(axis=1).sum())
    print(f"wrote {written[0] if len(written) == 1 else out} ({stack.depth} slices, {filled} with labels, "
          f"{len(prompts)} key prompt(s); {seconds / stack.depth:.2f} s per slice)")


def _whole_slices(values, option: str) -> list[tuple]:
    """Each `option` occurrence with its slice index (and a point's label) as integers."""
    from samadapt.errors import UserError

    out = []
    for numbers in values or ():
        whole = [0] + ([3] if option == "--point" else [])
        shown = " ".join(f"{v:g}" for v in numbers)
        if any(numbers[i] != int(numbers[i]) for i in whole):
            raise UserError(f"{option} {shown}: the slice index" + (" and the label" if len(whole) > 1 else "")
                            + " must be whole numbers")
        out.append(tuple(int(v) if i in whole else float(v) for i, v in enumerate(numbers)))
    return out


def _check_precision(precision: str, fast: bool) -> None:
    from samadapt.errors import UserError
    from samadapt.modeling.fast.encoder import PRECISIONS

    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    if precision != "fp32" and not fast:
        raise UserError(f"--precision {precision} needs the fast encoder: drop --no-fast")


def _load_memory_model(model: str | None, source, image_size: int | None, fast: bool, precision: str):
    """SAM2 with its memory from `--model`/`--init`, on the fast encoder unless `fast` is False;
    random weights are announced on stderr."""
    from samadapt.modeling.sam2_video import accelerate_memory_model, load_memory_model
    from samadapt.modeling.sources import warn_random_weights, weights_path

    weights = weights_path(source)
    net = load_memory_model(model or (None if weights else DEFAULT_MEMORY_MODEL), weights, image_size)
    if weights is None:
        warn_random_weights(net.name, "the masks")
    return accelerate_memory_model(net, fast=fast, precision=precision)


def _progress_bar(iterable, total: int, what: str):
    """A progress bar per direction on stderr, when stderr is a terminal."""
    import sys

    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=f"propagate {what}", file=sys.stderr, leave=False,
                disable=not sys.stderr.isatty())
