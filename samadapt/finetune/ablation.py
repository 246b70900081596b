"""Loss ablation: the same fine-tuning setup trained once per loss preset, compared in one table.

Every run shares the data, split, folds, model, initialisation, budget and seed; only the loss
changes. A score must come from cases that chose nothing, so each run is scored on a part that
took no part in selecting its checkpoint:

- the splits have a test part: every fold's model is scored on it (`--keep best` selects on the
  fold's val part, which is then never scored);
- no test part: each fold's val part is scored, and the model of the last epoch is kept (`--keep
  best` would select the checkpoint on the very cases it is scored on, so it becomes `last`, with
  a warning).

Scores use the shared evaluation report; the per-case scores (mean over classes) of all folds are
pooled into mean ± sd (with a test part, each fold's model adds its own score of every test case).
The table records the scored part and the kept checkpoint. With `progress`, each loss says when it
starts training (k/N) and its score when done; an interrupted run stops the ablation (status
"interrupted", no table written).

Layout of OUT::

    <loss>/fold<k>/        the fine-tuning run (reused when it holds a model trained with the same
                           settings; a finished run with other settings is refused; an interrupted
                           one resumes when the command is run again)
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

from samadapt.errors import UserError, warn
from samadapt.options import flag

METRICS = ("dice", "iou")


def parse_folds(text: str, n_folds: int) -> list[int]:
    if text.strip() == "all":
        return list(range(n_folds))
    try:
        folds = sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise UserError(f"{flag('folds')} {text!r}: expected 'all' or comma-separated fold numbers") from None
    bad = [f for f in folds if not 0 <= f < n_folds]
    if bad:
        raise UserError(f"{flag('folds')} {text!r}: folds {bad} are outside the split, which has folds 0..{n_folds - 1}")
    return folds


def parse_presets(text: str | None) -> list[str]:
    from samadapt.finetune.losses import LOSS_PRESETS

    if text is None:
        return list(LOSS_PRESETS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [n for n in names if n not in LOSS_PRESETS]
    if unknown or not names:
        raise UserError(f"{flag('losses')} {text!r}: unknown presets {unknown}; choose from {', '.join(LOSS_PRESETS)}")
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


def scored_part(splits: dict, keep: str) -> tuple[str, str]:
    """(part to score, checkpoint to keep) such that no scored case selected the checkpoint."""
    if splits["test"]["cases"]:
        return "test", keep
    if keep == "best":
        warn("the splits have no test part: scoring each fold's val part and keeping the last epoch "
             "(--keep best would select the checkpoint on the scored cases)")
    return "val", "last"


def _comparable(settings: dict) -> dict:
    # Paths are compared resolved, so a rerun from another working folder still matches.
    out = json.loads(json.dumps(settings, default=str))
    for key in ("data", "splits"):
        if isinstance(out.get(key), str):
            out[key] = str(Path(out[key]).resolve())
    return out


def check_reusable(run_dir: Path, config) -> None:
    """Refuse a finished run folder that was trained with other settings than `config`."""
    from samadapt.finetune.runs import CONFIG_FILE

    try:
        saved = json.loads((run_dir / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        raise UserError(f"finished run without a readable {CONFIG_FILE}: cannot tell how it was trained; "
                        "remove it or choose another --out", run_dir) from None
    saved, wanted = _comparable(saved), _comparable(config.run_settings())
    differ = [key for key in sorted(wanted) if saved.get(key, "<absent>") != wanted[key]]
    if differ:
        key = differ[0]
        raise UserError(f"finished run was trained with other settings ({len(differ)} differ, e.g. {key} "
                        f"{saved.get(key, '<absent>')!r} here vs {wanted[key]!r} now): remove it or choose "
                        "another --out", run_dir)


def run_loss_ablation(base, out: str | Path, folds: str = "0", losses: str | None = None) -> dict:
    """Train and evaluate every (loss preset, fold); returns the table also written to OUT."""
    from samadapt.data.dataset import load_dataset
    from samadapt.data.splits import load_splits
    from samadapt.engine.logging import note
    from samadapt.finetune.losses import LOSS_PRESETS
    from samadapt.finetune.runs import is_run_dir

    say = note if base.progress else (lambda _: None)
    out = Path(out)
    presets = parse_presets(losses)
    splits = load_splits(base.splits, load_dataset(base.data))
    fold_list = parse_folds(folds, len(splits["splits"]))
    part, keep = scored_part(splits, base.keep)
    base = replace(base, keep=keep)
    configs = {(preset, fold): replace(base, loss=LOSS_PRESETS[preset], fold=fold, out=str(out / preset / f"fold{fold}"),
                                       resume=(out / preset / f"fold{fold}" / "checkpoints").is_dir())
               for preset in presets for fold in fold_list}
    for config in configs.values():  # a mismatched folder fails now, not after hours of training
        if is_run_dir(config.out):
            check_reusable(Path(config.out), config)
    table = {"status": "completed", "data": str(base.data), "splits": str(base.splits), "part": part, "keep": keep,
             "folds": fold_list, "model": base.model, "init": base.init, "train": base.train, "epochs": base.epochs,
             "image_size": base.image_size, "seed": base.seed, "rows": [], "per_case": []}
    for number, preset in enumerate(presets, start=1):
        pooled: list[dict[str, float]] = []
        for fold in fold_list:
            spec = "" if LOSS_PRESETS[preset] == preset else f" ({LOSS_PRESETS[preset]})"
            say(f"loss {number}/{len(presets)}: training {preset}{spec}" + (f", fold {fold}" if len(fold_list) > 1 else ""))
            if not _train_unless_finished(configs[preset, fold]):
                return {**table, "status": "interrupted"}  # the table would mix finished and missing runs
            for case, scores in _scores(configs[preset, fold], part).items():
                pooled.append(scores)
                table["per_case"].append({"loss": preset, "fold": fold, "case_id": case, **scores})
        row = {"loss": preset, "spec": LOSS_PRESETS[preset], "part": part, "keep": keep, "n": len(pooled)}
        for metric in METRICS:
            row[f"{metric}_mean"], row[f"{metric}_sd"] = _mean_sd([s[metric] for s in pooled])
        table["rows"].append(row)
        say(f"loss {number}/{len(presets)}: {preset} done: Dice {row['dice_mean']:.4f} ± {row['dice_sd']:.4f} "
            f"over {row['n']} {part} cases")
    _write_table(out, table)
    return table


def finished(run_dir: Path) -> bool:
    """A run folder with a saved model that was not interrupted (an interrupted one resumes)."""
    from samadapt.finetune.runs import is_run_dir

    if not is_run_dir(run_dir):
        return False
    try:
        return json.loads((run_dir / "summary.json").read_text()).get("status") != "interrupted"
    except (OSError, ValueError, AttributeError):
        return True  # a model without a readable summary: check_reusable has vouched for its settings


def _train_unless_finished(config) -> bool:
    """Train (or resume) one run unless it finished before; False when this training was interrupted."""
    from samadapt.finetune.training import finetune

    if finished(Path(config.out)):
        return True
    return finetune(config)["status"] != "interrupted"  # the trainer refuses to resume other settings


def _scores(config, part: str) -> dict[str, dict[str, float]]:
    """Per-case scores of one finished run on `part` of its fold; the report goes to RUN/eval."""
    from samadapt.evaluate.report import evaluate_cases
    from samadapt.finetune.evaluation import run_split_cases, split_cases_for_run
    from samadapt.finetune.runs import load_finetune_run

    run_dir = Path(config.out)
    run = load_finetune_run(run_dir)
    cases = split_cases_for_run(Path(config.data), Path(config.splits), part, config.fold, run.class_names, run.info)
    result = evaluate_cases(run_split_cases(run.model, cases), run_dir / "eval",
                            class_names=run.class_names, overlays=False)
    return _case_scores(result.rows)


def _write_table(out: Path, table: dict) -> None:
    columns = ["loss", "spec", "part", "keep", "n", "dice_mean", "dice_sd", "iou_mean", "iou_sd"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(table["rows"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.csv").write_text(buffer.getvalue())
    (out / "ablation.json").write_text(json.dumps(table, indent=2, default=str) + "\n")
    lines = [f"# Loss ablation: {table['model']} ({table['train']}, init {table['init']}), "
             f"{table['epochs']} epochs, seed {table['seed']}",
             "", f"Scored on the {table['part']} part, models of folds {table['folds']} (checkpoint kept: "
             f"{table['keep']}); mean ± sd over cases (each case: mean over classes).", "",
             "| loss | spec | cases | Dice | IoU |", "| --- | --- | ---: | --- | --- |"]
    for row in table["rows"]:
        lines.append(f"| {row['loss']} | `{row['spec']}` | {row['n']} | {row['dice_mean']:.4f} ± {row['dice_sd']:.4f} "
                     f"| {row['iou_mean']:.4f} ± {row['iou_sd']:.4f} |")
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
