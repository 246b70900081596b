"""MAE budget curve in the demo's regime: MAE-init − random-init Dice against MAE pre-training epochs.

    python -m benchmarks.demo_mae_budget OUT [--epochs 0 12 48] [--threads 1] [--quick]

The labelled phantoms, the split, the random-init run and the fine-tuning budget are the full
demo's (`samadapt/demo/budget.py`); only the MAE stage's length changes (0 = no MAE run: the arm
is skipped). For every MAE budget it writes OUT/mae-<E>/ (pre-training, fine-tuning, evaluation)
and reports, per budget, the best validation Dice of each arm (what a user could select on) and the
paired test difference over all test frames and over those with a reference (95% bootstrap CI).
Results go to OUT/mae_budget.json and benchmarks/results/demo_mae_budget.json. Each point costs one
MAE run and one fine-tuning run; the random-init arm is trained once. Runs already finished in OUT
are reused, so an interrupted sweep continues.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


def _finetune_arm(out: Path, budget, data: dict, label: str, init: str, seed: int) -> dict:
    from samadapt.demo.pipeline import finetune_config
    from samadapt.finetune.training import finetune

    run = out / label
    if not (run / "summary.json").is_file():
        finetune(finetune_config(run, budget, data, init, seed, progress=False))
    summary = json.loads((run / "summary.json").read_text())
    return {"run": str(run), "init": init, "best_val_dice": summary["best"]["value"], "recipe": summary.get("recipe")}


def _difference(comparison: dict | None) -> dict | None:
    if not comparison:
        return None
    row = next(r for r in comparison["comparisons"] if r["class"] == "mean over classes")
    return {key: row[key] for key in ("n_pairs", "mean_baseline", "mean_other", "mean_difference", "ci_low", "ci_high",
                                      "wilcoxon_p")}


def sweep(out: Path, mae_epochs: list[int], quick: bool = False, seed: int = 0) -> dict:
    from samadapt.demo import pipeline
    from samadapt.demo.budget import FULL, QUICK

    budget = QUICK if quick else FULL
    out.mkdir(parents=True, exist_ok=True)
    data_file = out / "data.json"
    if not data_file.is_file():
        data_file.write_text(json.dumps(pipeline.make_data(out, budget, pipeline.DemoInput(None), seed)))
    data = json.loads(data_file.read_text())
    baseline = _finetune_arm(out, budget, data, "random-init", "random", seed)
    points = []
    for epochs in mae_epochs:
        if epochs < 1:
            continue
        point_dir = out / f"mae-{epochs}"
        point_budget = dataclasses.replace(budget, pretrain_epochs=epochs)
        pre_file = point_dir / "pretrain.json"
        if not pre_file.is_file():
            pre_file.parent.mkdir(parents=True, exist_ok=True)
            pre_file.write_text(json.dumps(pipeline.run_pretraining(point_dir, point_budget, data, seed)))
        pretrain = json.loads(pre_file.read_text())
        arm = _finetune_arm(point_dir, budget, data, "mae-init", f"mae:{pretrain['run']}", seed)
        runs = {"random-init": dict(baseline), "mae-init": arm}
        evaluations = pipeline.evaluate_finetuned(point_dir, data, runs)
        comparison = pipeline.compare(point_dir, evaluations)
        points.append({"mae_epochs": epochs, "mae_steps": pretrain["steps"], "mae_final_loss": pretrain["final_loss"],
                       "val_dice": {"random-init": baseline["best_val_dice"], "mae-init": arm["best_val_dice"]},
                       "test_difference_all": _difference(comparison),
                       "test_difference_with_reference": _difference(comparison.get("with_reference")),
                       "mae_recipe": arm["recipe"]})
    return {"budget": budget.name, "seed": seed, "cases": data["cases"], "unlabeled": data["unlabeled"], "points": points}


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import write_result

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, nargs="+", default=[12, 48], help="MAE pre-training epochs per point")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="the demo's quick budget (smoke run; numbers mean nothing)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = sweep(args.out, args.epochs, quick=args.quick, seed=args.seed)
    (args.out / "mae_budget.json").write_text(json.dumps(result, indent=2) + "\n")
    write_result("demo_mae_budget", result)
    print("| MAE epochs | MAE steps | val Dice random / MAE | test diff, all [95% CI] | test diff, with reference [95% CI] |")
    print("| --- | --- | --- | --- | --- |")
    for p in result["points"]:
        cells = []
        for key in ("test_difference_all", "test_difference_with_reference"):
            d = p[key]
            cells.append("n/a" if d is None else f"{d['mean_difference']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] (n={d['n_pairs']})")
        val = p["val_dice"]
        print(f"| {p['mae_epochs']} | {p['mae_steps']} | {val['random-init']:.3f} / {val['mae-init']:.3f} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
