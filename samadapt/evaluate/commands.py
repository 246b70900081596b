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
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for per_case.csv, summary.json, summary.md and overlays/."),
    classes: str | None = typer.Option(None, "--classes", help="Comma-separated names of labels 1..K (default: class_1..class_K from the data)."),
    hd95: bool = typer.Option(False, "--hd95", help="Also compute the 95th-percentile Hausdorff distance (slow on large volumes)."),
    images: Path | None = typer.Option(None, "--images", help="Folder of the images, paired by name, to draw the overlays on."),
    overlays: bool = typer.Option(True, "--overlays/--no-overlays", help="Draw worst, median and best cases."),
) -> None:
    """Score predicted masks against ground truth: Dice, IoU, precision, recall (and HD95) per case and class."""
    from samadapt.errors import UserError
    from samadapt.evaluate.folders import cases_from_folders
    from samadapt.evaluate.report import evaluate_cases

    # --pred/--gt are optional in the signature so that other sources of predictions (a model run on
    # a dataset split) can be added as alternative options feeding the same `evaluate_cases`.
    if pred is None or gt is None:
        raise UserError("evaluate needs both --pred DIR and --gt DIR")
    names = _class_names(classes)
    n_cases, cases = cases_from_folders(pred, gt, images)
    result = evaluate_cases(cases, out, class_names=names, with_hd95=hd95, overlays=overlays)
    dice = result.summary["mean_over_classes"]["dice"]
    print(f"evaluated {n_cases} cases ({len(result.class_names)} classes) -> {out}; "
          f"mean Dice {dice['mean']:.4f}" + (f" ± {dice['sd']:.4f}" if dice["sd"] is not None else ""))


def compare(
    runs: list[Path] = typer.Argument(..., help="Evaluation folders (with per_case.csv) or run folders (with eval/per_case.csv); the first is the baseline."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for compare.json, compare.md and compare.png."),
    metric: str = typer.Option("dice", "--metric", help="Column of per_case.csv to compare (dice, iou, precision, recall, hd95)."),
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
