"""Run every stage of the demo in order, then print the summary table and write the report."""

from __future__ import annotations

import platform
import time
from pathlib import Path

from samadapt.demo.budget import FULL, QUICK
from samadapt.demo.headline import headline
from samadapt.demo.pipeline import (
    RUN_LABELS, DemoInput, check_user_data, compare, evaluate_finetuned, make_data, prepare_out, run_finetuning,
    run_pretraining, write_results,
)

DICE_TARGET = 0.6  # the full phantom demo must reach this on held-out frames


def run_demo(out: Path, data: Path | None = None, quick: bool = False, seed: int = 0) -> dict:
    import torch
    from rich.console import Console

    from samadapt.demo.fewshot_stage import run_fewshot
    from samadapt.demo.stages import StageClock

    demo_input = check_user_data(data) if data is not None else DemoInput(None)
    out = prepare_out(Path(out))  # only after every input check: bad input leaves nothing behind
    budget = QUICK if quick else FULL
    console = Console(stderr=False, highlight=False)
    torch.manual_seed(seed)
    console.print(f"[bold]samadapt demo[/] ({budget.name} budget) -> {out}  "
                  f"[dim]{torch.get_num_threads()} threads, load {_load():.1f}[/]")
    clock = StageClock(console, total=7)
    results: dict = {"budget": budget.as_dict(), "seed": seed, "out": str(out), "model": "sam2-hiera-tiny",
                     "started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": _machine()}

    with clock.stage("data", "generating FA phantoms" if data is None else f"reading {data}"):
        results["data"] = make_data(out, budget, demo_input, seed)
        console.print(f"    {results['data']['cases']} labelled cases, classes {results['data']['classes']}")
    with clock.stage("MAE pre-training", f"{budget.pretrain_epochs} epochs on {budget.fa_unlabeled if data is None else 'the'} "
                     f"unlabeled images at {budget.pretrain_size} px"):
        results["pretrain"] = run_pretraining(out, budget, results["data"], seed)
    with clock.stage("fine-tuning", f"random init and MAE init, {budget.finetune_epochs} epochs each"):
        results["finetune"] = run_finetuning(out, budget, results["data"], results["pretrain"], seed)
    with clock.stage("evaluation", "held-out test cases"):
        results["evaluation"] = evaluate_finetuned(out, results["data"], results["finetune"])
    with clock.stage("paired comparison", "MAE init vs random init, per case"):
        results["compare"] = compare(out, results["evaluation"])
    with clock.stage("few-shot", "Dice against number of shots"):
        results["fewshot"] = run_fewshot(out, budget, seed, demo_input.dataset_path, demo_input.dims)
    with clock.stage("report", "report.html"):
        results["stages"] = clock.as_dicts()
        results["total_seconds"] = clock.elapsed
        results["dice_target"] = None if quick or data is not None else DICE_TARGET
        write_results(out, results)
        from samadapt.report.demo_report import write_report

        report = write_report(out, results)
    results["stages"] = clock.as_dicts()
    results["total_seconds"] = clock.elapsed
    write_results(out, results)
    print_summary(console, results, report)
    return results


def _load() -> float:
    import os

    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _machine() -> dict:
    import os

    import torch

    return {"cpus": os.cpu_count(), "threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform()}


def print_summary(console, results: dict, report: Path) -> None:
    from rich.table import Table

    table = Table(title="samadapt demo: results", title_justify="left")
    for column in ("result", "value", "note"):
        table.add_column(column)
    for row in headline(results):
        table.add_row(*row)
    console.print(table)
    times = Table(title="stage times (seconds)", title_justify="left")
    for column in ("stage", "wall", "CPU", "load", "quiet-machine estimate"):
        times.add_column(column, justify="right" if column != "stage" else "left")
    for stage in results["stages"]:
        times.add_row(stage["name"], f"{stage['wall_seconds']:.1f}", f"{stage['cpu_seconds']:.1f}",
                      f"{stage['load_after']:.1f}", f"{stage['quiet_estimate_seconds']:.0f}")
    quiet = sum(s["quiet_estimate_seconds"] for s in results["stages"])
    times.add_row("total", f"{results['total_seconds']:.1f}", f"{sum(s['cpu_seconds'] for s in results['stages']):.1f}",
                  "", f"{quiet:.0f}")
    console.print(times)
    target = results.get("dice_target")
    if target is not None:
        reached = max(results["evaluation"][label]["summary"]["mean_over_classes"]["dice"]["mean"] or 0.0
                      for label in RUN_LABELS)
        verdict = "reached" if reached >= target else "NOT reached"
        console.print(f"Dice target {target} on held-out frames: {verdict} (best {reached:.3f})")
    console.print(f"report: [bold]{report}[/]  (all numbers: {Path(results['out']) / 'results.json'})")
