"""Training curves as a PNG: every training command draws RUN_DIR/curves.png from its epoch.csv."""

from __future__ import annotations

import csv
from pathlib import Path

from samadapt.engine.callbacks import Callback


def plot_epoch_curves(run_dir: str | Path, columns: tuple[str, ...] = ("train_loss", "val_dice")) -> Path | None:
    """Draw the named columns of RUN_DIR/epoch.csv against the epoch into RUN_DIR/curves.png.

    Columns absent from the file are skipped; returns None when there is no epoch.csv yet.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    path = Path(run_dir) / "epoch.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None
    epochs = [int(r["epoch"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, style in zip(columns, ("-", "--", ":", "-.")):
        if key not in rows[0]:
            continue
        values = [float(r[key]) if r.get(key) else float("nan") for r in rows]
        ax.plot(epochs, values, style, marker="o", markersize=3, label=key)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(run_dir) / "curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


class CurvePlot(Callback):
    """Draws RUN_DIR/curves.png when training ends (rank 0 only)."""

    def __init__(self, columns: tuple[str, ...] = ("train_loss", "val_dice")):
        self.columns = columns

    def on_fit_end(self, trainer, summary):
        if trainer.is_main:
            plot_epoch_curves(trainer.run_dir, self.columns)
