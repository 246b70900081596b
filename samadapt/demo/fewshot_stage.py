"""Few-shot stage of the demo: Dice against the number of labelled shots, in 2D and in a 3D volume.

Phantom mode uses the anatomy phantoms (three organ-like structures): a pool of 2D images gives the
shots, the other images are scored, and every shot count is scored on the same images so the
points of the sweep are comparable. For 3D, slices of one volume are the shots and the other
volumes are segmented slice by slice. With `--data` the user's dataset plays both roles: its
first cases form the shot pool and the rest are scored. The frozen encoder has seeded random
weights, so no download is needed; the features are computed once (the cache) and reused by
every shot count.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from samadapt.demo.budget import Budget
from samadapt.demo.pipeline import MODEL
from samadapt.demo.stages import case_progress

POOL_FRACTION = 0.4  # share of the 2D cases that may become shots; the rest are scored


def make_anatomy(out: Path, budget: Budget, seed: int) -> dict:
    from samadapt.data.phantoms import generate_phantoms

    return {
        "2d": generate_phantoms(out / "data" / "anatomy-2d", n=budget.anatomy_images, size=budget.fewshot_size,
                                seed=seed, kind="anatomy", dims="2d"),
        "3d": generate_phantoms(out / "data" / "anatomy-3d", n=budget.anatomy_volumes,
                                size=budget.fewshot_volume_size, seed=seed, kind="anatomy", dims="3d",
                                depth=budget.anatomy_depth),
    }


def _cache(cases, cache_dir: Path, size: int, label: str):
    from samadapt.fewshot.cache import build_cache
    from samadapt.fewshot.items import case_items

    total = sum(len(case_items(c)) for c in cases)
    bar, tick = case_progress(total, f"encode {label}")
    try:
        return build_cache(cases, cache_dir, MODEL, None, size, batch_size=4, on_item=tick)
    finally:
        bar.close()


def _train_and_score(pool, scored, classes, cache_dir: Path, run_dir: Path, shots: int, budget: Budget,
                     seed: int, largest_component: bool) -> dict:
    from samadapt.fewshot.evaluate import evaluate_run
    from samadapt.fewshot.predict import load_fewshot_run
    from samadapt.fewshot.train import FewShotConfig, train_fewshot

    config = FewShotConfig(shots=shots, epochs=budget.fewshot_epochs, lr=1e-3, seed=seed, batch_size=2)
    summary = train_fewshot(pool, classes, cache_dir, run_dir, config, progress=True)
    result = evaluate_run(load_fewshot_run(run_dir), scored, run_dir / "eval", largest_component=largest_component,
                          exclude_support=False)
    per_class = {name: stats["dice"]["mean"] for name, stats in result.summary["per_class"].items()}
    return {"shots": shots, "run": str(run_dir), "eval": str(result.out_dir), "support": summary["support"]["items"],
            "steps": summary["global_step"], "dice": result.summary["mean_over_classes"]["dice"],
            "per_class_dice": per_class, "n_scored": result.summary["n_cases"],
            "overlays": sorted(str(p) for p in (result.out_dir / "overlays").glob("*.png"))}


def run_sweep(dataset_path: Path, out_dir: Path, size: int, shot_counts, budget: Budget, seed: int,
              label: str) -> dict:
    """Cache once, then train and score one run per shot count on a fixed scored set."""
    from samadapt.data.dataset import load_dataset

    dataset = load_dataset(dataset_path)
    cases = dataset.labeled_cases()
    dims = cases[0].dims
    if dims == "3d":
        pool, scored = cases[:1], cases[1:] or cases[:1]
    else:
        n_pool = max(max(shot_counts), int(round(POOL_FRACTION * len(cases))))
        pool, scored = cases[:n_pool], cases[n_pool:]
    if not scored:
        return {"label": label, "skipped": "too few cases to hold any out for scoring"}
    _cache(cases, out_dir / "cache", size, label)
    rows = []
    for shots in shot_counts:
        rows.append(_train_and_score(pool, scored, dataset.class_names, out_dir / "cache",
                                     out_dir / f"{shots}-shot", shots, budget, seed, largest_component=dims == "3d"))
    return {"label": label, "dims": dims, "dataset": str(dataset_path), "image_size": size,
            "classes": dataset.class_names, "pool": [c.id for c in pool], "scored": [c.id for c in scored],
            "rows": rows}


def run_fewshot(out: Path, budget: Budget, seed: int, user_dataset: Path | None, user_dims: str) -> dict:
    """All few-shot sweeps of the demo; writes fewshot/sweep.csv and sweep.json."""
    root = out / "fewshot"
    sweeps = []
    if user_dataset is None:
        anatomy = make_anatomy(out, budget, seed)
        sweeps.append(run_sweep(anatomy["2d"], root / "2d", budget.fewshot_size, budget.fewshot_shots, budget,
                                seed, "2D anatomy phantoms"))
        sweeps.append(run_sweep(anatomy["3d"], root / "3d", budget.fewshot_volume_size,
                                (budget.fewshot_volume_shots,), budget, seed, "3D anatomy volume"))
    else:
        size = budget.fewshot_size if user_dims == "2d" else budget.fewshot_volume_size
        shots = budget.fewshot_shots if user_dims == "2d" else (budget.fewshot_volume_shots,)
        sweeps.append(run_sweep(user_dataset, root / user_dims, size, shots, budget, seed, "your dataset"))
    write_sweep_files(root, sweeps)
    return {"sweeps": sweeps, "csv": str(root / "sweep.csv"), "json": str(root / "sweep.json")}


def write_sweep_files(root: Path, sweeps: list[dict]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "sweep.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sweep", "dims", "shots", "class", "dice_mean", "dice_sd", "n_scored"])
        for sweep in sweeps:
            for row in sweep.get("rows", []):
                writer.writerow([sweep["label"], sweep["dims"], row["shots"], "mean over classes",
                                 row["dice"]["mean"], row["dice"]["sd"], row["n_scored"]])
                for name, value in row["per_class_dice"].items():
                    writer.writerow([sweep["label"], sweep["dims"], row["shots"], name, value, "", row["n_scored"]])
    (root / "sweep.json").write_text(json.dumps(sweeps, indent=2, default=str) + "\n", encoding="utf-8")
