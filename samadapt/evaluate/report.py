"""Evaluate a set of cases and write the report: per_case.csv, summary.json, summary.md, overlays/.

`evaluate_cases` is the one entry point shared by every way of producing predictions (folders of
masks, or a model run on a dataset split): callers only turn their inputs into `EvaluationCase`s.
Cases are consumed one at a time, so a generator that reads or predicts lazily keeps memory flat;
only a small 2D view of each case is kept (on disk) to draw the overlays at the end.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from samadapt.engine.atomic import staged_dir
from samadapt.errors import UserError
from samadapt.evaluate.metrics import OVERLAP_METRICS, absent_label_scores, aggregate, case_scores, empty_case_counts
from samadapt.evaluate.overlays import representative_slice, save_overlay

PER_CASE_FILE = "per_case.csv"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
OVERLAY_DIR = "overlays"


@dataclass
class EvaluationCase:
    """One case to score.

    pred, gt: integer index masks of one shape, (H, W) or (X, Y, Z); 0 = background, 1..K = classes.
    image: optional, (H, W), (H, W, C) or the volume's shape; used only for the overlays.
    spacing: physical size of a pixel/voxel per axis (for HD95); None = pixel units.
    slice_axis: the axis of a volume's slices, for the false-positive slice count (None: the last).
    """

    case_id: str
    pred: np.ndarray
    gt: np.ndarray
    image: np.ndarray | None = None
    spacing: Sequence[float] | None = None
    slice_axis: int | None = None


def false_positive_slices(pred: np.ndarray, gt: np.ndarray, label: int, slice_axis: int | None = None) -> int:
    """Slices (a 2D mask is one slice) where `label` is predicted and absent from the reference."""
    if pred.ndim == 2:
        return int(bool((pred == label).any()) and not (gt == label).any())
    axis = pred.ndim - 1 if slice_axis is None else slice_axis
    others = tuple(a for a in range(pred.ndim) if a != axis)
    return int(((pred == label).any(axis=others) & ~(gt == label).any(axis=others)).sum())


@dataclass
class EvaluationResult:
    out_dir: Path | None  # None: scored without writing a report
    class_names: list[str]
    metrics: list[str]
    rows: list[dict] = field(repr=False)  # one per (case, class), the lines of per_case.csv
    summary: dict = field(repr=False)  # the content of summary.json


def _check_case(case: EvaluationCase, n_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(case.pred), np.asarray(case.gt)
    where = f"case {case.case_id!r}"
    if pred.shape != gt.shape:
        raise UserError(f"{where}: prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    if pred.ndim not in (2, 3):
        raise UserError(f"{where}: masks must be 2D or 3D, got shape {pred.shape}")
    for name, mask in (("prediction", pred), ("ground truth", gt)):
        if mask.dtype.kind == "f" and not np.array_equal(mask, np.round(mask)):
            raise UserError(f"{where}: {name} has non-integer values; expected an index mask")
        if mask.dtype.kind not in "biuf":
            raise UserError(f"{where}: {name} has unsupported type {mask.dtype}")
        if mask.size and mask.min() < 0:
            raise UserError(f"{where}: {name} has negative label {int(mask.min())}")
        if n_classes is not None and mask.size and mask.max() > n_classes:
            raise UserError(f"{where}: {name} has label {int(mask.max())} but only {n_classes} classes were named")
    if case.image is not None and np.asarray(case.image).shape[: pred.ndim] != pred.shape:
        raise UserError(f"{where}: image shape {np.asarray(case.image).shape} does not match the masks {pred.shape}")
    return pred.astype(np.int64, copy=False), gt.astype(np.int64, copy=False)


def _per_case_means(rows: list[dict], metrics: Sequence[str]) -> dict[str, dict[str, float]]:
    """{case_id: {metric: mean over classes of the defined values (NaN if none)}}."""
    grouped: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        per_metric = grouped.setdefault(row["case_id"], {m: [] for m in metrics})
        for metric in metrics:
            per_metric[metric].append(row[metric])
    means = {}
    for case_id, per_metric in grouped.items():
        means[case_id] = {}
        for metric, values in per_metric.items():
            defined = [v for v in values if not math.isnan(v)]
            means[case_id][metric] = float(np.mean(defined)) if defined else math.nan
    return means


def rank_cases(case_dice: dict[str, float]) -> dict[str, str]:
    """Worst, median and best case ids by (mean) Dice; ties broken by case id for reproducibility."""
    ordered = sorted(case_dice, key=lambda c: (case_dice[c], c))
    return {"worst": ordered[0], "median": ordered[(len(ordered) - 1) // 2], "best": ordered[-1]}


def cases_with_reference(rows: Iterable[dict]) -> set[str]:
    """Ids of the cases whose reference is not empty for at least one class (rows of per_case.csv,
    as dicts of numbers or of its text)."""
    return {row["case_id"] for row in rows if float(row["gt_pixels"] or 0) > 0}


def summarize(rows: list[dict], class_names: Sequence[str], metrics: Sequence[str]) -> dict:
    """Mean ± sd (defined values only), counts of undefined values and of empty-mask cases, and Dice
    over the cases with a non-empty reference beside it: an empty reference predicted empty scores 1,
    so on data with many empty cases the overall mean says little about the structures themselves."""
    per_class = {}
    for name in class_names:
        class_rows = [r for r in rows if r["class"] == name]
        per_class[name] = {m: aggregate(r[m] for r in class_rows) for m in metrics}
        per_class[name]["dice_with_reference"] = aggregate(r["dice"] for r in class_rows if r["gt_pixels"] > 0)
        per_class[name]["empty_cases"] = empty_case_counts(class_rows)
        per_class[name]["false_positive_slices"] = int(sum(r["fp_slices"] for r in class_rows))
    case_means = _per_case_means(rows, metrics)
    referenced = cases_with_reference(rows)
    return {
        "n_cases": len(case_means),
        "classes": list(class_names),
        "metrics": list(metrics),
        "per_class": per_class,
        "mean_over_classes": {m: aggregate(v[m] for v in case_means.values()) for m in metrics},
        "n_cases_with_reference": len(referenced),
        "mean_over_classes_with_reference": {"dice": aggregate(v["dice"] for c, v in case_means.items() if c in referenced)},
        "cases_by_dice": rank_cases({c: v["dice"] for c, v in case_means.items()}),
        "false_positive_slices": int(sum(r["fp_slices"] for r in rows)),
        "empty_mask_rules": "see docs/evaluation.md: both empty -> dice/iou 1; one empty -> 0; "
        "precision undefined without prediction, recall without ground truth; undefined values "
        "are excluded from means and counted in n_undefined",
    }


def _format_number(value: float) -> str:
    return "nan" if isinstance(value, float) and math.isnan(value) else f"{value:.6g}"


def per_case_csv(rows: list[dict], metrics: Sequence[str]) -> str:
    buffer = io.StringIO()
    columns = ["case_id", "class", *metrics, "gt_pixels", "pred_pixels", "fp_slices"]
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_format_number(row[c]) if isinstance(row[c], float) else row[c] for c in columns])
    return buffer.getvalue()


def summary_markdown(summary: dict) -> str:
    def cell(stats: dict) -> str:
        if stats["mean"] is None:
            return f"undefined ({stats['n_undefined']})"
        text = f"{stats['mean']:.3f}" + (f" ± {stats['sd']:.3f}" if stats["sd"] is not None else "")
        return text + (f" ({stats['n_undefined']} undef.)" if stats["n_undefined"] else "")

    metrics = summary["metrics"]
    tolerance = f" (nsd: normalised surface Dice within {summary['nsd_tolerance']:g} mm, pixels for 2D masks)" \
        if summary.get("nsd_tolerance") is not None else ""
    lines = [
        f"# Evaluation summary ({summary['n_cases']} cases, {summary['n_cases_with_reference']} with a non-empty reference)",
        "",
        "Mean ± sd over cases; undefined values (see docs/evaluation.md) are left out and counted. "
        "\"dice, non-empty ref.\" is Dice over the cases whose reference holds the class (mean over classes: "
        f"over the cases whose reference holds any class){tolerance}.",
        "",
        "| class | " + " | ".join(metrics) + " | dice, non-empty ref. |",
        "|---" * (len(metrics) + 2) + "|",
    ]
    for name, stats in summary["per_class"].items():
        lines.append(f"| {name} | " + " | ".join(cell(stats[m]) for m in metrics) + f" | {cell(stats['dice_with_reference'])} |")
    if len(summary["per_class"]) > 1:
        lines.append("| **mean over classes** | " + " | ".join(cell(summary["mean_over_classes"][m]) for m in metrics)
                     + f" | {cell(summary['mean_over_classes_with_reference']['dice'])} |")
    counts = ("gt_empty", "pred_empty", "both_empty", "false_positive_on_empty", "missed_entirely")
    lines += ["", "## Empty masks (number of cases)", "", "| class | " + " | ".join(counts) + " |", "|---" * 6 + "|"]
    for name, stats in summary["per_class"].items():
        lines.append(f"| {name} | " + " | ".join(str(stats["empty_cases"][c]) for c in counts) + " |")
    fp = ", ".join(f"{n} {s['false_positive_slices']}" for n, s in summary["per_class"].items())
    lines += ["", f"False-positive slices (class predicted on a slice whose reference lacks it), all cases: "
              f"{summary['false_positive_slices']} ({fp}).", ""]
    ranked = summary["cases_by_dice"]
    lines += [f"Cases by Dice: worst `{ranked['worst']}`, median `{ranked['median']}`, best `{ranked['best']}`.", ""]
    return "\n".join(lines)


def dice_line(summary: dict, digits: int = 4) -> str:
    """'mean Dice m ± sd; n cases with a non-empty reference: Dice m' for a command's last line."""
    dice, referenced = summary["mean_over_classes"]["dice"], summary["mean_over_classes_with_reference"]["dice"]
    text = f"mean Dice {dice['mean']:.{digits}f}" + (f" ± {dice['sd']:.{digits}f}" if dice["sd"] is not None else "")
    if referenced["mean"] is None:
        return text + "; no case has a non-empty reference"
    return text + f"; {referenced['n']} cases with a non-empty reference: Dice {referenced['mean']:.{digits}f}"


def json_ready(value):
    """NaN is not valid JSON: write it as null."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate_cases(
    cases: Iterable[EvaluationCase],
    out_dir: str | Path | None,
    class_names: Sequence[str] | None = None,
    with_hd95: bool = False,
    overlays: bool = True,
    on_case: Callable[[str], None] | None = None,
    nsd_tolerance: float | None = None,
    inputs: dict | None = None,
) -> EvaluationResult:
    """Score every case and write the report into `out_dir` (all files appear together or not at all;
    `out_dir` None: score only, write nothing).

    class_names: names of labels 1..K; without them K is the largest label seen and classes are
        called class_1..class_K. A class absent from both masks of a case scores as a correct
        rejection (`absent_label_scores`).
    on_case: called with each case id after it is scored (progress display).
    nsd_tolerance: also score the normalised surface Dice at this tolerance (mm where cases have a
        spacing, pixels otherwise).
    inputs: what the cases came from (`engine.provenance.input_hashes`, part), kept in summary.json
        for `compare` to check that runs were scored on the same cases.
    """
    n_classes = None if class_names is None else len(class_names)
    if class_names is not None and len(set(class_names)) != len(class_names):
        raise UserError(f"class names must be unique, got {list(class_names)}")
    if nsd_tolerance is not None and not (math.isfinite(nsd_tolerance) and nsd_tolerance > 0):
        raise UserError(f"--nsd-tolerance {nsd_tolerance}: expected a positive distance in mm")
    metrics = [*OVERLAP_METRICS, *(["hd95"] if with_hd95 else []), *(["nsd"] if nsd_tolerance is not None else [])]
    overlays = overlays and out_dir is not None  # overlays are files: none without a folder
    scores_by_case: dict[str, dict[int, dict]] = {}
    max_label = 0
    with tempfile.TemporaryDirectory(prefix="samadapt-eval-") as views:
        for case in cases:
            if case.case_id in scores_by_case:
                raise UserError(f"case {case.case_id!r} appears twice")
            pred, gt = _check_case(case, n_classes)
            labels = sorted((set(np.unique(pred).tolist()) | set(np.unique(gt).tolist())) - {0})
            max_label = max([max_label, *labels])
            try:
                scores_by_case[case.case_id] = case_scores(pred, gt, labels, case.spacing, with_hd95, nsd_tolerance)
            except ValueError as exc:
                raise UserError(f"case {case.case_id!r}: {exc}") from None
            for label, scores in scores_by_case[case.case_id].items():
                scores["fp_slices"] = false_positive_slices(pred, gt, label, case.slice_axis)
            if overlays:
                image, pred_2d, gt_2d = representative_slice(pred, gt, case.image)
                view = {"pred": pred_2d.astype(np.uint8 if max_label < 256 else np.int32), "gt": gt_2d}
                if image is not None:
                    view["image"] = np.asarray(image, dtype=np.float32)
                np.savez_compressed(Path(views) / f"{len(scores_by_case)}.npz", **view)
            if on_case is not None:
                on_case(case.case_id)
        if not scores_by_case:
            raise UserError("no cases to evaluate")

        names = list(class_names) if class_names is not None else [f"class_{k}" for k in range(1, max(max_label, 1) + 1)]
        rows = []
        for case_id, per_label in scores_by_case.items():
            for label, name in enumerate(names, start=1):
                scores = per_label.get(label) or absent_label_scores(with_hd95, nsd_tolerance is not None)
                rows.append({"case_id": case_id, "class": name, **{m: scores[m] for m in metrics},
                             "gt_pixels": scores["gt_pixels"], "pred_pixels": scores["pred_pixels"],
                             "fp_slices": scores.get("fp_slices", 0)})
        summary = summarize(rows, names, metrics)
        if nsd_tolerance is not None:
            summary["nsd_tolerance"] = float(nsd_tolerance)
        if inputs:
            summary["inputs"] = dict(inputs)
        if out_dir is None:
            return EvaluationResult(None, names, metrics, rows, summary)
        out_dir = Path(out_dir)
        with staged_dir(out_dir) as stage:
            (stage / PER_CASE_FILE).write_text(per_case_csv(rows, metrics), encoding="utf-8")
            (stage / SUMMARY_JSON).write_text(json.dumps(json_ready(summary), indent=2) + "\n", encoding="utf-8")
            (stage / SUMMARY_MD).write_text(summary_markdown(summary), encoding="utf-8")
            if overlays:
                case_index = {case_id: i for i, case_id in enumerate(scores_by_case, start=1)}
                case_means = _per_case_means(rows, ["dice"])
                for rank, case_id in summary["cases_by_dice"].items():
                    with np.load(Path(views) / f"{case_index[case_id]}.npz") as view:
                        safe_id = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in case_id)
                        title = f"{rank}: {case_id}  (mean Dice {case_means[case_id]['dice']:.3f})"
                        save_overlay(stage / OVERLAY_DIR / f"{rank}_{safe_id}.png", view["pred"], view["gt"],
                                     view["image"] if "image" in view else None, title)
    return EvaluationResult(out_dir, names, metrics, rows, summary)
