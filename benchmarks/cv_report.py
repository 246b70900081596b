"""Cross-validation table: per-class Dice and IoU, mean ± sd over folds, for each model of a CV run.

    python -m benchmarks.cv_report runs/ffa_cv [unet sam2_random mae_sam2]

Reads `<out>/<model>/fold<k>/eval/summary.json` (written by `samadapt evaluate`) and prints a
markdown table; also writes it to `<out>/cv_table.md` and the numbers to `<out>/cv_table.json`.
Each fold's value is the mean over that fold's held-out cases; the ± is the sd over folds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.common import mean_sd, write_markdown_table


def fold_values(out: Path, model: str) -> dict[str, dict[str, list[float]]]:
    """{class or 'mean': {metric: [value per fold]}}."""
    values: dict[str, dict[str, list[float]]] = {}
    for path in sorted((out / model).glob("fold*/eval/summary.json")):
        summary = json.loads(path.read_text())
        per_class = {**summary["per_class"], "mean over classes": summary["mean_over_classes"]}
        for name, metrics in per_class.items():
            for metric in ("dice", "iou"):
                values.setdefault(name, {}).setdefault(metric, []).append(metrics[metric]["mean"])
    return values


def main(out: Path, models: list[str]) -> str:
    table = {model: fold_values(out, model) for model in models}
    classes = list(dict.fromkeys(name for model in models for name in table[model]))
    lines = ["| model | folds | " + " | ".join(f"{c} Dice | {c} IoU" for c in classes) + " |",
             "| --- | --- |" + " --- | --- |" * len(classes)]
    for model in models:
        folds = max((len(m["dice"]) for m in table[model].values()), default=0)
        cells = [f"{mean_sd(table[model].get(c, {}).get('dice', []))} | {mean_sd(table[model].get(c, {}).get('iou', []))}"
                 for c in classes]
        lines.append(f"| {model} | {folds} | " + " | ".join(cells) + " |")
    return write_markdown_table(out, "cv_table", lines, table)


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    main(folder, sys.argv[2:] or ["unet", "sam2_random", "mae_sam2"])
