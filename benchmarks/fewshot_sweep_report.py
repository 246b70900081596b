"""Tables and the Dice-vs-shots plot of a k-shot sweep (`benchmarks/fewshot_sweep.sh`).

    python -m benchmarks.fewshot_sweep_report runs/fewshot_sweep/jsrt

Reads `<out>/<encoder>/k<K>_s<seed>/eval/summary.json` and writes `sweep.csv` (one row per encoder,
shots, seed and class: the test-set mean Dice and IoU), `sweep.md` (mean ± sd over seeds, per class
and the mean over classes) and `dice_vs_shots.png`.
"""

from __future__ import annotations

import csv
import json
import re
import statistics
import sys
from pathlib import Path

from benchmarks.common import mean_sd

RUN = re.compile(r"k(\d+)_s(\d+)$")
ENCODER_LABELS = {"random": "random-init encoder", "mae": "MAE encoder (own images)"}


def collect(out: Path) -> list[dict]:
    rows = []
    for summary_path in sorted(out.glob("*/k*_s*/eval/summary.json")):
        run = summary_path.parent.parent
        match = RUN.match(run.name)
        if not match:
            continue
        summary = json.loads(summary_path.read_text())
        per_class = dict(summary["per_class"])
        per_class["mean"] = summary["mean_over_classes"]
        for name, metrics in per_class.items():
            rows.append({"encoder": run.parent.name, "shots": int(match[1]), "seed": int(match[2]), "class": name,
                         "dice": metrics["dice"]["mean"], "iou": metrics["iou"]["mean"]})
    return rows


def table(rows: list[dict], metric: str) -> str:
    classes = list(dict.fromkeys(r["class"] for r in rows if r["class"] != "mean")) + ["mean"]
    lines = [f"| encoder | shots | {' | '.join(classes)} |", "| --- | --- |" + " --- |" * len(classes)]
    for encoder in dict.fromkeys(r["encoder"] for r in rows):
        for shots in sorted({r["shots"] for r in rows if r["encoder"] == encoder}):
            cells = []
            for name in classes:
                values = [r[metric] for r in rows if (r["encoder"], r["shots"], r["class"]) == (encoder, shots, name)]
                cells.append(mean_sd(values))
            lines.append(f"| {ENCODER_LABELS.get(encoder, encoder)} | {shots} | {' | '.join(cells)} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    for encoder in dict.fromkeys(r["encoder"] for r in rows):
        shots = sorted({r["shots"] for r in rows if r["encoder"] == encoder})
        per_seed = [[r["dice"] for r in rows if (r["encoder"], r["shots"], r["class"]) == (encoder, k, "mean")] for k in shots]
        means = [statistics.mean(v) for v in per_seed]
        sds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in per_seed]
        axis.errorbar(shots, means, yerr=sds, marker="o", capsize=3, label=ENCODER_LABELS.get(encoder, encoder))
    axis.set_xscale("log")
    axis.set_xticks(sorted({r["shots"] for r in rows}))
    axis.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axis.set_xlabel("labelled shots (images or slices)")
    axis.set_ylabel("test Dice, mean over classes")
    axis.set_ylim(0, 1)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(out: Path) -> None:
    rows = collect(out)
    if not rows:
        raise SystemExit(f"no evaluated runs under {out}")
    with (out / "sweep.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    seeds = len({r["seed"] for r in rows})
    text = (f"# k-shot sweep: {out.name}\n\nTest-set Dice, mean ± sd over {seeds} shot selections (seeds).\n\n"
            + table(rows, "dice") + "\n\nIoU:\n\n" + table(rows, "iou") + "\n")
    (out / "sweep.md").write_text(text)
    plot(rows, out / "dice_vs_shots.png", f"{out.name}: few-shot Dice vs shots")
    print(text)
    print(f"wrote {out / 'sweep.csv'}, {out / 'sweep.md'}, {out / 'dice_vs_shots.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
