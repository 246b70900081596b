"""Label-efficiency curve: mean Dice over classes against labelled training frames, one line per model.

    python -m benchmarks.cv_curve --out docs/img/ffa_label_efficiency.png \
        3=runs/ffa_cv6k_n3 5=runs/ffa_cv6k_n5 10=runs/ffa_cv6k [--models unet sam2_random mae_sam2]

Each `N=OUT` is a `benchmarks/ffa_cv.sh` output folder whose folds trained on N frames; the points
are the mean over folds of each fold's mean Dice over classes (`cv_report`'s numbers), the bars the
sd over folds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.cv_report import fold_values

MEAN = "mean over classes"


def curve(points: dict[int, Path], models: list[str]) -> dict[str, list[tuple[int, float, float]]]:
    """{model: [(frames, mean Dice, sd over folds)]}, frames ascending."""
    import statistics

    lines = {}
    for model in models:
        rows = []
        for frames in sorted(points):
            dice = fold_values(points[frames], model).get(MEAN, {}).get("dice", [])
            if dice:
                rows.append((frames, statistics.fmean(dice), statistics.stdev(dice) if len(dice) > 1 else 0.0))
        lines[model] = rows
    return lines


def plot(lines: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 3.4), dpi=120)
    for model, rows in lines.items():
        if rows:
            x, y, sd = zip(*rows)
            axes.errorbar(x, y, yerr=sd, marker="o", capsize=3, label=model)
    axes.set_xlabel("labelled training frames per fold")
    axes.set_ylabel("mean Dice over classes")
    axes.legend(frameon=False)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("points", nargs="+", help="N=OUT: frames per fold and the CV output folder")
    parser.add_argument("--models", nargs="+", default=["unet", "sam2_random", "mae_sam2"])
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    points = {}
    for item in args.points:
        frames, _, folder = item.partition("=")
        if not frames.isdigit() or not folder:
            parser.error(f"{item!r}: expected N=OUT")
        points[int(frames)] = Path(folder)
    lines = curve(points, args.models)
    plot(lines, args.out)
    for model, rows in lines.items():
        print(model + ": " + ", ".join(f"{n} frames {m:.3f} ± {s:.3f}" for n, m, s in rows))
    return lines


if __name__ == "__main__":
    main()
