"""Several fine-tuning seeds of one cross-validation: each case's metrics averaged over the seeds,
per model, so that `samadapt compare` pairs models on seed-averaged cases; and each seed's own mean.

    python -m benchmarks.cv_seeds --out runs/ffa_cv_seeds runs/ffa_cv runs/ffa_cv_s1 runs/ffa_cv_s2 \
        --models unet sam2_random mae_sam2
    samadapt compare runs/ffa_cv_seeds/sam2_random runs/ffa_cv_seeds/mae_sam2 --out runs/ffa_cv_seeds/compare

Reads `<seed dir>/pooled/<model>/per_case.csv` (written by benchmarks/ffa_cv.sh; every case once,
predicted by the fold that did not train on it). Every seed must hold the same cases and classes:
the seeds change the fine-tuning only, never the folds. Writes `<out>/<model>/per_case.csv` (the
means over seeds) and `<out>/seeds.json` / `seeds.md` (per model: each seed's mean Dice over cases
and classes, and their mean and range).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from benchmarks.common import write_markdown_table

KEYS = ("case_id", "class")
COUNTS = ("gt_pixels",)  # the same in every seed (the reference); kept, not averaged


def read_rows(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with path.open() as handle:
        return {tuple(row[k] for k in KEYS): row for row in csv.DictReader(handle)}


def average_seeds(tables: list[dict], source: list[Path]) -> list[dict]:
    """One row per (case, class): the mean of each metric over the seeds' rows."""
    keys = set(tables[0])
    for table, path in zip(tables[1:], source[1:]):
        if set(table) != keys:
            raise SystemExit(f"{path}: other cases or classes than {source[0]} (the seeds must share their folds)")
    rows = []
    for key in sorted(keys):
        first = tables[0][key]
        row = dict(zip(KEYS, key))
        for column in first:
            if column in KEYS:
                continue
            values = [t[key][column] for t in tables]
            if column in COUNTS or any(v == "" for v in values):
                row[column] = first[column] if len(set(values)) == 1 else ""
            else:
                row[column] = f"{sum(float(v) for v in values) / len(values):.6f}"
        rows.append(row)
    return rows


def seed_mean(table: dict) -> float:
    """Mean over cases of the mean Dice over classes (the CV tables' 'mean over classes')."""
    per_case: dict[str, list[float]] = {}
    for (case, _), row in table.items():
        per_case.setdefault(case, []).append(float(row["dice"]))
    return sum(sum(v) / len(v) for v in per_case.values()) / len(per_case)


def main(seed_dirs: list[Path], models: list[str], out: Path) -> dict:
    summary = {}
    for model in models:
        paths = [d / "pooled" / model / "per_case.csv" for d in seed_dirs]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise SystemExit(f"missing: {', '.join(missing)}")
        tables = [read_rows(p) for p in paths]
        rows = average_seeds(tables, paths)
        (out / model).mkdir(parents=True, exist_ok=True)
        with (out / model / "per_case.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        means = [seed_mean(t) for t in tables]
        summary[model] = {"per_seed": dict(zip(map(str, seed_dirs), means)), "mean": sum(means) / len(means),
                          "range": [min(means), max(means)]}
    lines = ["| model | " + " | ".join(d.name for d in seed_dirs) + " | mean | range |",
             "| --- |" + " --- |" * (len(seed_dirs) + 2)]
    for model, entry in summary.items():
        cells = " | ".join(f"{v:.3f}" for v in entry["per_seed"].values())
        lines.append(f"| {model} | {cells} | {entry['mean']:.3f} | {entry['range'][0]:.3f}–{entry['range'][1]:.3f} |")
    write_markdown_table(out, "seeds", lines, summary)
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seed_dirs", nargs="+", type=Path)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    main(args.seed_dirs, args.models, args.out)
