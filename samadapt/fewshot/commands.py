"""CLI: `samadapt fewshot cache | train | predict | evaluate`."""

from __future__ import annotations

from pathlib import Path

import typer

from samadapt.fewshot.config import SEED_SLICES, CacheSettings, FewShotConfig, PropagationSeeds
from samadapt.modeling.sources import init_help
from samadapt.options import config_option, devices_option

# What each command can start from (see samadapt.modeling.sources): the cache encodes with any encoder;
# the prompted baseline needs a trained mask decoder, which an MAE run does not have.
CACHE_INIT = ("random", "sam2", "hf", "mae", "ckpt")
BASELINE_INIT = ("random", "sam2", "hf", "ckpt")
NO_TRAINED_DECODER = {"mae": "a pre-training run's mask decoder never trained, so prompts mean nothing"}
RUN_HELP = "Run folder from `samadapt fewshot train`."

fewshot_app = typer.Typer(help="Few-shot prompt-free segmentation: a few labelled images become the prompts.",
                          no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(fewshot_app, name="fewshot")


def _frozen_weights(init: str, command: str, accepts, model: str, image_size: int, outputs: str):
    """The weights file/folder for `--init` (None: random, announced loudly)."""
    from samadapt.modeling.registry import get_spec
    from samadapt.modeling.sources import parse_init, warn_random_weights, weights_path

    get_spec(model).check_image_size(image_size)  # a bad model or size fails before the warning
    source = parse_init(init, accepts, command=command, reasons=NO_TRAINED_DECODER)
    weights = weights_path(source)
    if weights is None:
        warn_random_weights(model, outputs)
    return weights


def _cases(data: Path, splits: Path | None, part: str, fold: int = 0):
    from samadapt.data.dataset import load_dataset
    from samadapt.data.splits import load_splits, split_cases

    dataset = load_dataset(data)
    cases = dataset.cases if splits is None else split_cases(dataset, load_splits(splits, dataset), part, fold)
    if not cases:
        from samadapt.errors import UserError

        raise UserError(f"no cases in part {part!r} of the splits", splits)
    return dataset, cases


@fewshot_app.command("cache")
def cache(
    model: str = config_option(CacheSettings, "model", "-m", help="Model name (see `samadapt models`)."),
    init: str = config_option(CacheSettings, "init", help=init_help(CACHE_INIT)),
    image_size: int = config_option(CacheSettings, "image_size", help="Model input size in pixels."),
    data: Path = typer.Option(..., "--data", help="Dataset description or folder (2D images or NIfTI volumes)."),
    out: Path = typer.Option(..., "--out", "-o", help="Cache folder (re-runs reuse it)."),
    batch_size: int = config_option(CacheSettings, "batch_size", help="Images/slices per encoder call."),
) -> None:
    """Encode every image/slice once with the frozen encoder and store the decoder's inputs (fp16)."""
    from samadapt.data.check import require_readable
    from samadapt.data.dataset import load_dataset
    from samadapt.engine.atomic import check_output_dir
    from samadapt.engine.logging import ItemProgress
    from samadapt.engine.run_folder import refuse_output_in_inputs, run_folder
    from samadapt.fewshot.cache import build_cache
    from samadapt.fewshot.items import case_items

    CacheSettings(model=model, init=init, image_size=image_size, batch_size=batch_size).validate()
    check_output_dir(out)
    dataset = load_dataset(data)
    require_readable(dataset.cases, masks=False)  # a broken file fails before the cache folder is touched
    refuse_output_in_inputs(out, [dataset.spec.images, dataset.spec.masks])
    weights = _frozen_weights(init, "fewshot cache", CACHE_INIT, model, image_size, "the cached features")
    # encoding takes minutes on a CPU: a bar per image/slice (a line every 30 s in a log)
    progress = ItemProgress(sum(len(case_items(c)) for c in dataset.cases), "caching features")
    try:
        with run_folder(out, inputs=[dataset.spec.images, dataset.spec.masks]):
            report = build_cache(dataset.cases, out, model, weights, image_size, batch_size=batch_size,
                                 on_item=lambda *_: progress.update())
    finally:
        progress.close()
    rate = report.encoded / report.seconds_total if report.encoded and report.seconds_total else 0.0
    print(f"{report.items} items in {out}: {report.encoded} encoded, {report.reused} reused, "
          f"{report.removed_stale} stale removed; {report.bytes_per_item / 1024:.1f} KiB per item, "
          f"{report.total_bytes / 1024**2:.1f} MiB total" + (f"; {rate:.2f} items/s" if rate else ""))


@fewshot_app.command("train")
def train(
    data: Path = typer.Option(..., "--data", help="Labelled dataset the shots are picked from."),
    cache_dir: Path = typer.Option(..., "--cache", help="Feature cache built by `samadapt fewshot cache`."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder."),
    shots: int = config_option(FewShotConfig, "shots", "-k", help="Number of labelled images/slices to learn from."),
    splits: Path | None = typer.Option(None, "--splits", help="splits.json: shots come from its train part."),
    fold: int = typer.Option(0, "--fold", help="Fold of the splits."),
    epochs: int = config_option(FewShotConfig, "epochs"),
    lr: float = config_option(FewShotConfig, "lr"),
    weight_decay: float = config_option(FewShotConfig, "weight_decay", help="AdamW weight decay."),
    grad_clip: float = config_option(FewShotConfig, "grad_clip", help="Clip the gradient norm to this value (0: off)."),
    seed: int = config_option(FewShotConfig, "seed", help="Picks the shots and seeds training."),
    loss: str = config_option(FewShotConfig, "loss", help="Loss spec, e.g. dice+bce or 0.9*dice+0.1*bce."),
    batch_size: int = config_option(FewShotConfig, "batch_size"),
    prototypes_per_class: int = config_option(FewShotConfig, "prototypes_per_class", help=">1: k-means prototypes per class."),
    background_prototypes: int = config_option(FewShotConfig, "background_prototypes"),
    model: str | None = typer.Option(None, "--model", "-m", help="Check the cache was built with this model."),
    image_size: int | None = typer.Option(None, "--image-size", help="Check the cache was built at this size."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run."),
    devices: int | None = devices_option(),
) -> None:
    """Train the mask decoder + prototype projection on cached features (the encoder never runs)."""
    import os

    from samadapt.cli import relaunch_on_devices
    from samadapt.engine.provenance import check_resume_inputs, input_hashes
    from samadapt.engine.run_folder import dataset_inputs, train_in_run_folder
    from samadapt.fewshot.train import train_fewshot
    from samadapt.outcome import finish_training

    if (code := relaunch_on_devices(devices)) is not None:
        raise typer.Exit(code)
    config = FewShotConfig(shots=shots, epochs=epochs, lr=lr, weight_decay=weight_decay, grad_clip=grad_clip, seed=seed,
                           loss=loss, batch_size=batch_size, prototypes_per_class=prototypes_per_class,
                           background_prototypes=background_prototypes)
    config.validate()  # a bad value fails before the data is read
    dataset, cases = _cases(data, splits, "train", fold)
    def train():
        if resume:
            check_resume_inputs(out, splits=splits, data=data, cache=cache_dir)
        return train_fewshot(cases, dataset.class_names, cache_dir, out, config, model_name=model,
                             image_size=image_size, dataset_name=dataset.name, resume=resume,
                             inputs=input_hashes(splits=splits, data=data, cache=cache_dir))

    summary = train_in_run_folder(out, [*dataset_inputs(data), cache_dir], train)
    if os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 reports
        print(f"shots: {', '.join(summary['support']['items'])}")
    finish_training(summary, out, ["fewshot", "predict", "--model", out, "--input", "IMAGES",
                                   "--out", out / "predictions"], epochs=epochs)


@fewshot_app.command("predict")
def fewshot_predict(
    model: Path = typer.Option(..., "--model", "-m", help=RUN_HELP),
    input: Path = typer.Option(..., "--input", "-i", help="Image, folder of images, volume (NIfTI, NRRD, MHA, multi-frame DICOM), DICOM series folder, or folder of volumes."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: <stem>_mask.png (+ <stem>_overlay.png) or <stem>_mask.<input's format> label volumes in the input's geometry (.nii.gz for DICOM), and classes.json."),
    batch_size: int = config_option(CacheSettings, "batch_size", help="Images/slices per encoder call."),
    largest_component: bool = typer.Option(False, "--largest-component", help="3D: keep the largest component per class."),
    series: str | None = typer.Option(None, "--series", help="SeriesInstanceUID to read when the --input DICOM folder holds several (the error without it lists them)."),
    dicom_seg: bool = typer.Option(False, "--dicom-seg", help="DICOM series input: also write <stem>_seg.dcm, a DICOM Segmentation (highdicom) referencing the series."),
    propagate: bool = typer.Option(False, "--propagate", help="Volumes: seed SAM2's memory (from the weights the run's cache was built with) and propagate through the volume instead of segmenting slice by slice."),
    seed_slices: str = config_option(PropagationSeeds, "seed_slices", help=f"With --propagate, what seeds the memory: {' or '.join(SEED_SLICES)} (the decoder's most confident slices of the volume, or the run's support slices with their labels, read from --support-data)."),
    seed_count: int = config_option(PropagationSeeds, "seed_count", help="With --propagate: seed slices per class (confident), or support slices (support)."),
    support_data: Path | None = typer.Option(None, "--support-data", help="With --seed-slices support: the dataset the run was trained on (its support slices are read from it)."),
) -> None:
    """Segment new images with no prompt: the run's stored prototypes are the prompts."""
    from samadapt.engine.run_folder import run_folder
    from samadapt.errors import UserError
    from samadapt.fewshot.predict import check_volume_inputs, collect_inputs, load_fewshot_run, predict_path

    seeds = PropagationSeeds(seed_slices=seed_slices, seed_count=seed_count)
    seeds.validate()
    if support_data is not None and not (propagate and seeds.seed_slices == "support"):
        raise UserError("--support-data is read with --propagate --seed-slices support only")
    if propagate and seeds.seed_slices == "support" and support_data is None:
        raise UserError("--seed-slices support reads the run's support slices: give --support-data DATASET")
    files, volumes = collect_inputs(input, series)  # bad input fails before the model is loaded
    if propagate and not volumes:
        raise UserError("--propagate segments volumes (NIfTI, NRRD, MHA, DICOM), not 2D images", input)
    if volumes or dicom_seg:
        check_volume_inputs(files, series, dicom_seg)
    run = load_fewshot_run(model)
    propagation = _propagation(run, seeds, support_data) if propagate else None
    with run_folder(out, inputs=[input], models=[model]):
        result = predict_path(run, input, out, batch_size, largest_component, series, dicom_seg, propagation)
    print(f"wrote {len(result['files'])} label {'volumes' if result['volumes'] else 'images'} and classes.json to {out} "
          f"in {result['seconds']:.1f} s")


def _propagation(run, seeds: PropagationSeeds, support_data: Path | None):
    """The memory model (refused without memory weights) and the seeds, before anything is written."""
    from samadapt.fewshot.propagate import VolumePropagation, memory_model_for_run, read_support_frames

    support = read_support_frames(run, support_data, seeds.seed_count) if seeds.seed_slices == "support" else []
    memory = memory_model_for_run(run)
    if run.config.get("cache_model", {}).get("weights") is None:  # announced once every input is known good
        from samadapt.modeling.sources import warn_random_weights

        warn_random_weights(memory.name, "the memory attention and the propagated masks")
    return VolumePropagation(memory, seeds, support)


@fewshot_app.command("evaluate")
def fewshot_evaluate(
    model: Path = typer.Option(..., "--model", "-m", help=RUN_HELP),
    data: Path = typer.Option(..., "--data", help="Labelled dataset."),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder (per_case.csv, summary.json/md, overlays)."),
    splits: Path | None = typer.Option(None, "--splits", help="splits.json; without it: all labelled cases but the shots."),
    part: str = typer.Option("test", "--part", help="Part of the splits: train, val or test."),
    fold: int = typer.Option(0, "--fold"),
    largest_component: bool = typer.Option(False, "--largest-component"),
    hd95: bool = typer.Option(False, "--hd95", help="Also the 95th-percentile Hausdorff distance (mm for volumes)."),
    nsd_tolerance: float | None = typer.Option(None, "--nsd-tolerance", metavar="MM", help="Also the normalised surface Dice at this tolerance (mm for volumes, pixels for 2D)."),
    propagate: bool = typer.Option(False, "--propagate", help="Volumes: predict as `fewshot predict --propagate` does."),
    seed_slices: str = config_option(PropagationSeeds, "seed_slices", help=f"With --propagate: {' or '.join(SEED_SLICES)} (support slices are read from --data)."),
    seed_count: int = config_option(PropagationSeeds, "seed_count", help="With --propagate: seed slices per class (confident), or support slices (support)."),
) -> None:
    """Predict the labelled cases and score them with the shared evaluation report."""
    from samadapt.errors import UserError
    from samadapt.evaluate.report import dice_line
    from samadapt.engine.provenance import input_hashes
    from samadapt.engine.run_folder import dataset_inputs, run_folder
    from samadapt.fewshot.evaluate import check_run_inputs, evaluate_run
    from samadapt.fewshot.predict import load_fewshot_run

    seeds = PropagationSeeds(seed_slices=seed_slices, seed_count=seed_count)
    seeds.validate()
    dataset, cases = _cases(data, splits, part, fold)
    if propagate and any(c.dims != "3d" for c in cases):
        raise UserError("--propagate segments volumes; the dataset holds 2D images", data)
    run = load_fewshot_run(model)
    check_run_inputs(run, model, dataset, cases, splits, data)
    propagation = _propagation(run, seeds, data) if propagate else None
    with run_folder(out, inputs=dataset_inputs(data), models=[model]):
        result = evaluate_run(run, cases, out, largest_component=largest_component,
                              exclude_support=splits is None, with_hd95=hd95, nsd_tolerance=nsd_tolerance,
                              inputs={**input_hashes(splits=splits, data=data), "part": part if splits else "all",
                                      **({"fold": fold} if splits and part != "test" else {})},
                              propagation=propagation)
    print(f"evaluated {len({r['case_id'] for r in result.rows})} cases; report in {out}; "
          + dice_line(result.summary, digits=3))


@fewshot_app.command("baseline")
def baseline(
    data: Path = typer.Option(..., "--data", help="Labelled dataset (prompts come from its ground truth)."),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder."),
    prompt: str = typer.Option("point", "--prompt", help="point: one click per component; box: one box per component."),
    model: str = config_option(CacheSettings, "model", "-m"),
    init: str = config_option(CacheSettings, "init", help=init_help(BASELINE_INIT) + " The same as the few-shot cache's for a fair comparison."),
    image_size: int = config_option(CacheSettings, "image_size"),
    splits: Path | None = typer.Option(None, "--splits", help="splits.json; without it: every labelled case."),
    part: str = typer.Option("test", "--part", help="Part of the splits: train, val or test."),
    fold: int = typer.Option(0, "--fold"),
) -> None:
    """Zero-shot SAM2/SAM with ground-truth point or box prompts, scored like `fewshot evaluate`."""
    from samadapt.fewshot.prompt_baselines import PROMPT_KINDS, evaluate_baseline
    from samadapt.fewshot.cache import build_frozen_model

    if prompt not in PROMPT_KINDS:
        from samadapt.errors import UserError

        raise UserError(f"--prompt must be one of {', '.join(PROMPT_KINDS)}, got {prompt!r}")
    dataset, cases = _cases(data, splits, part, fold)
    weights = _frozen_weights(init, "fewshot baseline", BASELINE_INIT, model, image_size,
                             "the baseline's masks and scores")
    result = evaluate_baseline(build_frozen_model(model, weights, image_size), cases, dataset.class_names, out, prompt)
    from samadapt.evaluate.report import dice_line

    print(f"{prompt} baseline on {result.summary['n_cases']} cases: {dice_line(result.summary, digits=3)}; report in {out}")
