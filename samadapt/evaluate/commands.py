"""CLI: `samadapt evaluate` (score predicted masks against ground truth) and `samadapt compare`.

Both forms of evaluation, folders of masks here and a model run on a dataset split elsewhere, build
`EvaluationCase`s and hand them to `samadapt.evaluate.report.evaluate_cases`, so the report files
are the same whichever produced the predictions.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
    app.command("compare")(compare)


def _class_names(text: str | None) -> list[str] | None:
    from samadapt.errors import UserError

    if text is None:
        return None
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise UserError(f"--classes {text!r}: expected comma-separated names for labels 1..K, e.g. 'liver,spleen'")
    return names


def evaluate(
    pred: Path | None = typer.Option(None, "--pred", help="Folder of predicted masks (PNG/TIFF index or {0,255} binary masks, or NIfTI label volumes)."),
    gt: Path | None = typer.Option(None, "--gt", help="Folder of ground-truth masks; files are paired with predictions by name without extension."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder for per_case.csv, summary.json, summary.md and overlays/ (default: print the summary, write nothing)."),
    classes: str | None = typer.Option(None, "--classes", help="Comma-separated names of labels 1..K (default: class_1..class_K from the data)."),
    hd95: bool = typer.Option(False, "--hd95", help="Also compute the 95th-percentile Hausdorff distance, in mm for volumes (slow on large volumes)."),
    nsd_tolerance: float | None = typer.Option(None, "--nsd-tolerance", metavar="MM", help="Also compute the normalised surface Dice at this tolerance (mm for volumes, using their voxel spacing; pixels for 2D masks)."),
    images: Path | None = typer.Option(None, "--images", help="Folder of the images, paired by name, to draw the overlays on."),
    overlays: bool = typer.Option(True, "--overlays/--no-overlays", help="Draw worst, median and best cases."),
    model: Path | None = typer.Option(None, "--model", "-m", help="A fine-tuning run folder: predict the cases of --part of --data with it."),
    data: Path | None = typer.Option(None, "--data", help="With --model: the labelled dataset (description file or folder)."),
    splits: Path | None = typer.Option(None, "--splits", help="With --model: splits.json (default: the one the run was trained with)."),
    part: str = typer.Option("test", "--part", help="With --model: the part of the splits to evaluate, test or val (or train)."),
    fold: int | None = typer.Option(None, "--fold", help="With --model and --part val: the fold (default: the run's)."),
) -> None:
    """Score predicted masks against ground truth: Dice, IoU, precision, recall (and HD95, surface Dice) per case and class.

    Either --pred DIR --gt DIR (folders of masks), or --model RUN_DIR --data DATASET --part test|val
    (a fine-tuned model predicts the part's cases first). Without --out the summary is printed only.
    """
    import contextlib

    from samadapt.engine.run_folder import dataset_inputs, run_folder
    from samadapt.errors import UserError
    from samadapt.evaluate.report import evaluate_cases

    if model is not None:
        if pred is not None or gt is not None:
            raise UserError("give either --model (with --data) or --pred and --gt, not both")
        if data is None:
            raise UserError("evaluate --model needs --data DATASET")
        names, n_cases, cases, inputs = _cases_from_run(model, data, part, splits, fold)
    else:
        from samadapt.evaluate.folders import cases_from_folders

        if pred is None or gt is None:
            raise UserError("evaluate needs both --pred DIR and --gt DIR, or --model RUN_DIR with --data")
        names = _class_names(classes)
        n_cases, cases = cases_from_folders(pred, gt, images, n_classes=None if names is None else len(names))
        inputs = None
    with run_folder(out, inputs=[*dataset_inputs(data), pred, gt, images], models=[model]) if out is not None \
            else contextlib.nullcontext():
        result = evaluate_cases(cases, out, class_names=names, with_hd95=hd95, overlays=overlays,
                                nsd_tolerance=nsd_tolerance, inputs=inputs)
    if out is None:
        from samadapt.evaluate.report import summary_markdown

        print(summary_markdown(result.summary))
    from samadapt.evaluate.report import dice_line

    print(f"evaluated {n_cases} cases ({len(result.class_names)} classes)" + (f" -> {out}" if out else "") + "; "
          + dice_line(result.summary))


def _cases_from_run(run_dir: Path, data: Path, part: str, splits: Path | None, fold: int | None):
    """(class names, number of cases, lazy EvaluationCases) of a fine-tuned run on a dataset split."""
    from samadapt.finetune.evaluation import resolve_split, run_split_cases, split_cases_for_run
    from samadapt.engine.provenance import check_evaluation_inputs, input_hashes
    from samadapt.finetune.runs import load_finetune_run

    run = load_finetune_run(run_dir)
    splits_file, fold = resolve_split(run.info, run_dir, splits, fold)
    check_evaluation_inputs(run.info, run_dir, splits=splits_file, data=data)
    cases = split_cases_for_run(data, splits_file, part, fold, run.class_names, run.info)
    inputs = {**input_hashes(splits=splits_file, data=data), "part": part, **({"fold": fold} if part != "test" else {})}
    return run.class_names, len(cases), run_split_cases(run.model, cases), inputs


def compare(
    runs: list[Path] = typer.Argument(..., help="Evaluation folders (with per_case.csv) or run folders (with eval/per_case.csv); the first is the baseline."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for compare.json, compare.md and compare.png."),
    metric: str = typer.Option("dice", "--metric", help="Column of per_case.csv to compare (dice, iou, precision, recall, hd95, nsd)."),
    resamples: int = typer.Option(10_000, "--resamples", help="Bootstrap resamples for the 95% confidence interval."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
) -> None:
    """Paired comparison of runs with the first: mean difference, bootstrap 95% CI, Wilcoxon p-value."""
    from samadapt.errors import UserError
    from samadapt.evaluate.compare import MEAN_OVER_CLASSES, compare_runs

    if resamples < 100:
        raise UserError(f"--resamples {resamples}: use at least 100")
    result = compare_runs(runs, out, metric=metric, n_resamples=resamples, seed=seed)
    print(f"compared {len(runs)} runs on {result['n_common_cases']} common cases ({metric}) -> {out}")
    for row in result["comparisons"]:
        if row["class"] == MEAN_OVER_CLASSES:
            print(f"  {row['run']} - {row['baseline']}: {row['mean_difference']:+.4f} "
                  f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}], Wilcoxon p = {row['wilcoxon_p']:.4g}")
    if result.get("with_reference"):
        print(f"on the {result['with_reference']['n_common_cases']} cases with a non-empty reference:")
        for row in result["with_reference"]["comparisons"]:
            if row["class"] == MEAN_OVER_CLASSES:
                print(f"  {row['run']} - {row['baseline']}: {row['mean_difference']:+.4f} "
                      f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}], Wilcoxon p = {row['wilcoxon_p']:.4g}")
