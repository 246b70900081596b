"""Figures of the demo report (matplotlib, PNG), each drawn from CSV files kept next to it."""

from __future__ import annotations

import csv
import math
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def read_csv(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _column(rows: list[dict], key: str) -> list[float]:
    out = []
    for row in rows:
        text = (row.get(key) or "").strip()
        try:
            out.append(float(text))
        except ValueError:
            out.append(math.nan)
    return out


def training_curves(pretrain_dir: Path, finetune_dirs: dict[str, Path], target: Path) -> Path:
    """Three panels: MAE reconstruction loss per step; fine-tuning training loss per epoch; validation
    Dice per epoch (one line per starting point)."""
    plt = _pyplot()
    figure, (mae_ax, loss_ax, dice_ax) = plt.subplots(1, 3, figsize=(12, 3.6), dpi=100)
    try:
        steps = read_csv(pretrain_dir / "train.csv")
        if steps:
            mae_ax.plot(_column(steps, "step"), _column(steps, "loss"), color="tab:purple", linewidth=1.2)
        mae_ax.set(title="MAE pre-training", xlabel="optimiser step", ylabel="reconstruction error (MSE, norm. pixels)")
        for label, run_dir in finetune_dirs.items():
            epochs = read_csv(run_dir / "epoch.csv")
            x = _column(epochs, "epoch")
            loss_ax.plot(x, _column(epochs, "train_loss"), marker="o", label=label)
            dice_ax.plot(x, _column(epochs, "val_dice"), marker="o", label=label)
        loss_ax.set(title="fine-tuning: training loss", xlabel="epoch", ylabel="Dice + BCE loss (lower is better)")
        dice_ax.set(title="fine-tuning: validation Dice", xlabel="epoch", ylabel="Dice (0 = no overlap, 1 = perfect)",
                    ylim=(0, 1))
        for ax in (mae_ax, loss_ax, dice_ax):
            ax.grid(alpha=0.3)
        loss_ax.legend(fontsize=8)
        dice_ax.legend(fontsize=8)
        figure.tight_layout()
        target.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(target, format="png")
    finally:
        plt.close(figure)
    return target


def shots_plot(sweeps: list[dict], target: Path) -> Path:
    """Mean Dice over classes (± sd over scored cases) against the number of shots, per sweep."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(6, 3.8), dpi=100)
    try:
        for sweep in sweeps:
            rows = sweep.get("rows", [])
            if not rows:
                continue
            shots = [r["shots"] for r in rows]
            means = [r["dice"]["mean"] if r["dice"]["mean"] is not None else math.nan for r in rows]
            sds = [r["dice"]["sd"] or 0.0 for r in rows]
            ax.errorbar(shots, means, yerr=sds, marker="o", capsize=4, label=sweep["label"])
        ax.set(xlabel="labelled shots (images, or slices of one volume)", ylabel="Dice on unseen cases", ylim=(0, 1))
        all_shots = sorted({r["shots"] for s in sweeps for r in s.get("rows", [])})
        if all_shots:
            ax.set_xticks(all_shots)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        figure.tight_layout()
        target.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(target, format="png")
    finally:
        plt.close(figure)
    return target
