"""Loss ablation: the same fine-tuning setup trained once per loss preset, compared in one table.

Every run shares the data, split, folds, model, initialisation, budget and seed; only the loss
changes. Each run is evaluated on the held-out part of its fold (`val` by default: in k-fold
cross-validation that is the fold's unseen patients) with the shared evaluation report, and the
per-case scores (mean over classes) of all folds are pooled into mean ± sd.

Layout of OUT::

    <loss>/fold<k>/        the fine-tuning run (reused when it already holds a model)
    <loss>/fold<k>/eval/   its evaluation report
    ablation.md, ablation.csv, ablation.json
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import replace
from pathlib import Path

from samadapt.errors import UserError

METRICS = ("dice", "iou")


def parse_folds(text: str, n_folds: int) -> list[int]:
    if text.strip() == "all":
        return list(range(n_folds))
    try:
        folds = sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise UserError(f"--folds {text!r}: expected 'all' or comma-separated fold numbers") from None
    bad = [f for f in folds if not 0 <= f < n_folds]
    if bad:
        raise UserError(f"--folds {text!r}: folds {bad} are outside the split, which has folds 0..{n_folds - 1}")
    return folds


def parse_presets(text: str | None) -> list[str]:
    from samadapt.finetune.losses import LOSS_PRESETS

    if text is None:
        return list(LOSS_PRESETS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [n for n in names if n not in LOSS_PRESETS]
    if unknown or not names:
        raise UserError(f"--losses {text!r}: unknown presets {unknown}; choose from {', '.join(LOSS_PRESETS)}")
    return names


def _mean_sd(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, sd


def _case_scores(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per case, the mean over classes of each metric (NaN-free classes only)."""
    by_case: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        scores = by_case.setdefault(row["case_id"], {m: [] for m in METRICS})
        for metric in METRICS:
            if not math.isnan(float(row[metric])):
                scores[metric].append(float(row[metric]))
    return {case: {m: (sum(v[m]) / len(v[m]) if v[m] else math.nan) for m in METRICS} for case, v in by_case.items()}


def run_loss_ablation(base, out: str | Path, folds: str = "0", losses: str | None = None, part: str = "val") -> dict:
    """Train and evaluate every (loss preset, fold); returns the table also written to OUT."""
    from samadapt.data.dataset import load_dataset
    from samadapt.data.splits import load_splits
    from samadapt.evaluate.report import evaluate_cases
    from samadapt.finetune.evaluation import run_split_cases, split_cases_for_run
    from samadapt.finetune.losses import LOSS_PRESETS
    from samadapt.finetune.runs import is_run_dir, load_run
    from samadapt.finetune.training import finetune

    out = Path(out)
    presets = parse_presets(losses)
    splits = load_splits(base.split, load_dataset(base.data))
    fold_list = parse_folds(folds, len(splits["splits"]))
    rows, per_case = [], []
    for preset in presets:
        pooled: list[dict[str, float]] = []
        for fold in fold_list:
            run_dir = out / preset / f"fold{fold}"
            if not is_run_dir(run_dir):
                finetune(replace(base, loss=LOSS_PRESETS[preset], fold=fold, out=str(run_dir),
                                 resume=(run_dir / "checkpoints").is_dir()))
            run = load_run(run_dir)
            cases = split_cases_for_run(Path(base.data), Path(base.split), part, fold, run.class_names)
            result = evaluate_cases(run_split_cases(run.model, cases), run_dir / "eval",
                                    class_names=run.class_names, overlays=False)
            for case, scores in _case_scores(result.rows).items():
                pooled.append(scores)
                per_case.append({"loss": preset, "fold": fold, "case_id": case, **scores})
        row = {"loss": preset, "spec": LOSS_PRESETS[preset], "n": len(pooled)}
        for metric in METRICS:
            row[f"{metric}_mean"], row[f"{metric}_sd"] = _mean_sd([s[metric] for s in pooled])
        rows.append(row)
    table = {"data": str(base.data), "split": str(base.split), "part": part, "folds": fold_list,
             "model": base.model, "init": base.init, "train": base.train, "epochs": base.epochs,
             "image_size": base.image_size, "seed": base.seed, "rows": rows, "per_case": per_case}
    _write_table(out, table)
    return table


def _write_table(out: Path, table: dict) -> None:
    columns = ["loss", "spec", "n", "dice_mean", "dice_sd", "iou_mean", "iou_sd"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(table["rows"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.csv").write_text(buffer.getvalue())
    (out / "ablation.json").write_text(json.dumps(table, indent=2, default=str) + "\n")
    lines = [f"# Loss ablation: {table['model']} ({table['train']}, init {table['init']}), "
             f"{table['epochs']} epochs, seed {table['seed']}",
             "", f"Scored on the {table['part']} part of folds {table['folds']}; mean ± sd over cases "
             "(each case: mean over classes).", "",
             "| loss | spec | cases | Dice | IoU |", "| --- | --- | ---: | --- | --- |"]
    for row in table["rows"]:
        lines.append(f"| {row['loss']} | `{row['spec']}` | {row['n']} | {row['dice_mean']:.4f} ± {row['dice_sd']:.4f} "
                     f"| {row['iou_mean']:.4f} ± {row['iou_sd']:.4f} |")
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
