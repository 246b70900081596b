"""Paired comparison of evaluation runs on their common cases.

Each run is an evaluation folder holding `per_case.csv` (or a run folder holding `eval/per_case.csv`).
The first run is the baseline; every other run is compared with it, case by case, on one metric:
the mean difference (run - baseline) with a seeded percentile-bootstrap 95% confidence interval and
the two-sided Wilcoxon signed-rank p-value (scipy). Comparisons are made per class and on the
per-case mean over classes. Only cases present in every run are used, so all rows share one set.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from samadapt.engine.atomic import staged_dir
from samadapt.errors import UserError, warn
from samadapt.evaluate.report import PER_CASE_FILE, json_ready

MEAN_OVER_CLASSES = "mean over classes"
# Below this many pairs the numbers mislead: the two-sided signed-rank test cannot reach p < 0.05
# with 5 or fewer, and a percentile bootstrap of a handful of differences covers far less than 95%.
MIN_RELIABLE_PAIRS = 10
COMPARE_JSON, COMPARE_MD, COMPARE_PNG = "compare.json", "compare.md", "compare.png"


def find_per_case_csv(run: str | Path) -> Path:
    """`run/per_case.csv`, else `run/eval/per_case.csv`; UserError naming the folder if neither exists."""
    run = Path(run)
    if not run.exists():
        raise UserError("run folder not found", run)
    if run.is_file() and run.name == PER_CASE_FILE:
        return run
    for candidate in (run / PER_CASE_FILE, run / "eval" / PER_CASE_FILE):
        if candidate.is_file():
            return candidate
    raise UserError(f"no {PER_CASE_FILE} in the folder or in its eval/ sub-folder (run 'samadapt evaluate' first)", run)


def read_metric(path: Path, metric: str) -> dict[tuple[str, str], float]:
    """{(case_id, class): value} of one metric column of a per_case.csv ('nan' / '' = undefined)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            if "case_id" not in columns or "class" not in columns:
                raise UserError("not a per-case table (needs case_id and class columns)", path)
            if metric not in columns:
                available = [c for c in columns if c not in ("case_id", "class", "gt_pixels", "pred_pixels")]
                raise UserError(f"metric {metric!r} not in the table; available: {', '.join(available)}", path)
            values = {}
            for line, row in enumerate(reader, start=2):
                text = (row.get(metric) or "").strip()
                try:
                    values[(row["case_id"], row["class"])] = float(text) if text else math.nan
                except ValueError:
                    raise UserError(f"line {line}: {metric} value {text!r} is not a number", path) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read per-case table ({exc})", path) from None
    if not values:
        raise UserError("per-case table has no rows", path)
    return values


def _with_class_means(values: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """Add (case_id, MEAN_OVER_CLASSES) entries: mean of each case's defined class values."""
    by_case: dict[str, list[float]] = {}
    for (case_id, _), value in values.items():
        by_case.setdefault(case_id, []).append(value)
    means = {}
    for case_id, case_values in by_case.items():
        defined = [v for v in case_values if not math.isnan(v)]
        means[(case_id, MEAN_OVER_CLASSES)] = float(np.mean(defined)) if defined else math.nan
    return {**values, **means}


def paired_statistics(baseline: np.ndarray, other: np.ndarray, n_resamples: int = 10_000, seed: int = 0) -> dict:
    """Mean difference (other - baseline), bootstrap 95% CI of it and the Wilcoxon signed-rank p-value.

    Pairs where either value is NaN are dropped (and counted in `n_dropped`).
    """
    from scipy import stats

    baseline, other = np.asarray(baseline, dtype=np.float64), np.asarray(other, dtype=np.float64)
    keep = ~(np.isnan(baseline) | np.isnan(other))
    differences = other[keep] - baseline[keep]
    result = {"n_pairs": int(keep.sum()), "n_dropped": int((~keep).sum()), "mean_baseline": math.nan,
              "mean_other": math.nan, "mean_difference": math.nan, "ci_low": math.nan, "ci_high": math.nan,
              "wilcoxon_p": math.nan}
    if differences.size == 0:
        return result
    mean = float(differences.mean())
    result.update(mean_baseline=float(baseline[keep].mean()), mean_other=float(other[keep].mean()), mean_difference=mean)
    if np.ptp(differences) == 0:
        # Every resample has the same mean, and the signed-rank test has nothing to rank.
        result.update(ci_low=mean, ci_high=mean, wilcoxon_p=1.0 if mean == 0 else math.nan)
    elif differences.size >= 2:
        interval = stats.bootstrap(
            (differences,), np.mean, n_resamples=n_resamples, confidence_level=0.95, method="percentile",
            vectorized=True, rng=np.random.default_rng(seed),
        ).confidence_interval
        result.update(ci_low=float(interval.low), ci_high=float(interval.high))
    if np.ptp(differences) > 0 or mean != 0:
        with warnings.catch_warnings():  # scipy warns about ties and zeros, which it handles
            warnings.simplefilter("ignore")
            result["wilcoxon_p"] = float(stats.wilcoxon(differences).pvalue)
    return result


def _run_labels(runs: Sequence[Path], tables: Sequence[Path]) -> list[str]:
    """A short, unique name per run: its evaluation folder's name (its run's for a folder called
    `eval`), with as many parent folders as it takes to tell equal names apart
    (`lora/eval_test`, `all/eval_test`); a number only when the paths themselves are equal."""
    folders = [table.parent.resolve() for table in tables]
    bases = [folder.parent if folder.name == "eval" else folder for folder in folders]
    depth = [1] * len(bases)

    def labels() -> list[str]:
        return ["/".join(base.parts[-d:]) or str(run) for base, d, run in zip(bases, depth, runs)]

    names = labels()
    while clashes := [i for i, name in enumerate(names) if depth[i] < len(bases[i].parts)
                      and any(other == name and bases[j] != bases[i] for j, other in enumerate(names))]:
        for i in clashes:
            depth[i] += 1
        names = labels()
    return [f"{name} ({index + 1})" if names.count(name) > 1 else name  # the same folder given twice
            for index, name in enumerate(names)]


# What each evaluation's summary.json records of its cases (`evaluate --model`, `fewshot evaluate`):
# runs scored on another split or another version of the dataset are not paired comparisons.
COMPARABLE_INPUTS = ("splits_sha256", "description_sha256", "part", "fold")


def check_comparable(tables: Sequence[Path]) -> None:
    """Refuse evaluation folders still being written, or scored on other inputs than the first."""
    from samadapt.engine.run_folder import refuse_incomplete

    recorded = []
    for table in tables:
        refuse_incomplete(table.parent, "evaluation folder")
        try:
            summary = json.loads((table.parent / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            summary = {}
        recorded.append(summary.get("inputs") or {} if isinstance(summary, dict) else {})
    for key in COMPARABLE_INPUTS:
        given = [(table, inputs[key]) for table, inputs in zip(tables, recorded) if key in inputs]
        for table, value in given[1:]:
            if value != given[0][1]:
                raise UserError(f"was scored on other cases than {given[0][0].parent} ({key.removesuffix('_sha256')} "
                                f"{str(value)[:12]} vs {str(given[0][1])[:12]}): compare runs evaluated on the same "
                                "splits file, part and dataset", table.parent / "summary.json")


def compare_runs(runs: Sequence[str | Path], out_dir: str | Path, metric: str = "dice",
                 n_resamples: int = 10_000, seed: int = 0) -> dict:
    """Compare runs[1:] with runs[0] and write compare.json, compare.md and compare.png into `out_dir`."""
    if len(runs) < 2:
        raise UserError(f"compare needs at least two runs, got {len(runs)}")
    runs = [Path(r) for r in runs]
    tables = [find_per_case_csv(r) for r in runs]
    check_comparable(tables)
    labels = _run_labels(runs, tables)
    values = [_with_class_means(read_metric(t, metric)) for t in tables]
    class_sets = [{cls for _, cls in v} for v in values]
    for table, classes in zip(tables[1:], class_sets[1:]):
        if classes != class_sets[0]:
            raise UserError(f"classes {sorted(classes - {MEAN_OVER_CLASSES})} differ from the first run's "
                            f"{sorted(class_sets[0] - {MEAN_OVER_CLASSES})}: the runs were not scored on the same "
                            "classes", table)
    common = set(values[0])
    for table_values in values[1:]:
        common &= set(table_values)
    if not common:
        raise UserError(f"the runs have no (case, class) in common: {', '.join(str(t) for t in tables)}")
    cases = sorted({case for case, _ in common})
    classes = sorted({cls for _, cls in common} - {MEAN_OVER_CLASSES}) + [MEAN_OVER_CLASSES]
    comparisons = _comparisons(labels, values, common, cases, classes, n_resamples, seed)
    result = {
        "metric": metric,
        "runs": [{"label": lab, "per_case": str(t), "n_cases": len({c for c, _ in v}) } for lab, t, v in zip(labels, tables, values)],
        "n_common_cases": len(cases),
        "bootstrap": {"resamples": n_resamples, "seed": seed, "method": "percentile", "confidence": 0.95},
        "comparisons": comparisons,
        "warnings": _small_sample_warnings(comparisons),
    }
    referenced = _cases_with_reference(tables[0], cases)
    result["n_cases_with_reference"] = len(referenced)
    if 0 < len(referenced) < len(cases):  # an empty reference predicted empty scores 1: compare without them too
        result["with_reference"] = {"n_common_cases": len(referenced),
                                    "comparisons": _comparisons(labels, values, common, referenced, classes,
                                                                n_resamples, seed)}
    for line in result["warnings"]:
        warn(line)
    per_run_means = {lab: [v[(case, MEAN_OVER_CLASSES)] for case in cases] for lab, v in zip(labels, values)}
    with staged_dir(Path(out_dir)) as stage:
        (stage / COMPARE_JSON).write_text(json.dumps(json_ready(result), indent=2) + "\n", encoding="utf-8")
        (stage / COMPARE_MD).write_text(compare_markdown(result), encoding="utf-8")
        _plot(stage / COMPARE_PNG, per_run_means, [c for c in comparisons if c["class"] == MEAN_OVER_CLASSES], metric)
    return result


def _comparisons(labels, values, common, cases, classes, n_resamples: int, seed: int) -> list[dict]:
    """One paired comparison per (run, class) of the runs after the first with the first, on `cases`."""
    rows = []
    for label, table_values in zip(labels[1:], values[1:]):
        for cls in classes:
            keys = [(case, cls) for case in cases if (case, cls) in common]
            stats = paired_statistics([values[0][k] for k in keys], [table_values[k] for k in keys], n_resamples, seed)
            rows.append({"baseline": labels[0], "run": label, "class": cls, **stats,
                         "few_pairs": stats["n_pairs"] < MIN_RELIABLE_PAIRS})
    return rows


def _cases_with_reference(table: Path, cases: list[str]) -> list[str]:
    """The `cases` whose reference (in the baseline's table) is not empty for at least one class."""
    from samadapt.evaluate.report import cases_with_reference

    try:
        pixels = read_metric(table, "gt_pixels")
    except UserError:  # a table without the column (written by other tools): nothing to select by
        return []
    kept = cases_with_reference({"case_id": case, "gt_pixels": value} for (case, _), value in pixels.items()
                                if not math.isnan(value))
    return [case for case in cases if case in kept]


def _small_sample_warnings(comparisons: list[dict]) -> list[str]:
    few = [row for row in comparisons if row["few_pairs"]]
    if not few:
        return []
    smallest = min(row["n_pairs"] for row in few)
    return [f"{len(few)} of {len(comparisons)} comparisons rest on fewer than {MIN_RELIABLE_PAIRS} paired cases "
            f"(smallest n = {smallest}): their 95% CI and Wilcoxon p are unreliable at this size"]


def compare_markdown(result: dict) -> str:
    def number(value, digits=3):
        return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"

    lines = [
        f"# Paired comparison on {result['metric']} ({result['n_common_cases']} common cases)",
        "",
        f"Difference = run − baseline; 95% CI from {result['bootstrap']['resamples']} bootstrap resamples "
        f"(seed {result['bootstrap']['seed']}); p from the Wilcoxon signed-rank test. See docs/evaluation.md.",
        "",
        *[f"**Warning:** {line}." for line in result.get("warnings", [])],
        *([""] if result.get("warnings") else []),
        "| run | baseline | class | n | baseline mean | run mean | difference | 95% CI | Wilcoxon p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    header = lines[-2:]

    def table(rows: list[dict]) -> None:
        for row in rows:
            ci = f"[{number(row['ci_low'])}, {number(row['ci_high'])}]"
            dropped = f" (+{row['n_dropped']} undef.)" if row["n_dropped"] else ""
            lines.append(
                f"| {row['run']} | {row['baseline']} | {row['class']} | {row['n_pairs']}{dropped} | "
                f"{number(row['mean_baseline'])} | {number(row['mean_other'])} | {number(row['mean_difference'])} | "
                f"{ci} | {number(row['wilcoxon_p'], 4)} |"
            )

    table(result["comparisons"])
    if result.get("n_cases_with_reference") == result["n_common_cases"]:
        lines += ["", "Every case has a non-empty reference, so no case scores 1 just for being empty on both sides."]
    if result.get("with_reference"):
        lines += ["", f"## Cases with a non-empty reference ({result['with_reference']['n_common_cases']} cases)", "",
                  "The same comparison without the cases whose reference is empty for every class (an empty "
                  "reference predicted empty scores 1 and can carry a difference on its own).", "", *header]
        table(result["with_reference"]["comparisons"])
    return "\n".join(lines) + "\n"


def _plot(path: Path, per_run_values: dict[str, list[float]], differences: list[dict], metric: str) -> None:
    """Left: per-case metric (mean over classes) per run. Right: difference from baseline with 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    labels = list(per_run_values)
    figure, (left, right) = plt.subplots(1, 2, figsize=(4 + 1.2 * len(labels), 4.2), dpi=100)
    try:
        data = [[v for v in per_run_values[lab] if not math.isnan(v)] for lab in labels]
        left.boxplot(data, showmeans=True)
        left.set_xticks(range(1, len(labels) + 1), labels, rotation=20, ha="right", fontsize=8)
        jitter = np.random.default_rng(0)
        for position, values in enumerate(data, start=1):
            left.scatter(position + jitter.uniform(-0.12, 0.12, len(values)), values, s=8, alpha=0.5, color="grey")
        left.set_ylabel(f"{metric} per case (mean over classes)")
        names = [row["run"] for row in differences]
        means = np.array([row["mean_difference"] for row in differences], dtype=float)
        lows = np.array([row["ci_low"] for row in differences], dtype=float)
        highs = np.array([row["ci_high"] for row in differences], dtype=float)
        errors = np.nan_to_num(np.vstack([means - lows, highs - means]), nan=0.0)
        right.bar(range(len(names)), np.nan_to_num(means), yerr=errors, capsize=4, color="tab:blue", alpha=0.7)
        right.axhline(0.0, color="black", linewidth=0.8)
        right.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
        right.set_ylabel(f"{metric} difference vs {labels[0]} (95% CI)")
        figure.tight_layout()
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)
