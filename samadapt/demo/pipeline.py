"""The demo pipeline: data -> MAE pre-training -> fine-tuning (random and MAE start) -> evaluation
and paired comparison -> few-shot sweep -> report, all in one process.

Output folder layout (`--out`, default runs/demo)::

    data/fa/ (phantoms) or the user's dataset in place; splits.json
    pretrain/            MAE run: metrics CSVs, recon/ pictures, encoder/ checkpoint
    finetune/random-init/, finetune/mae-init/
                         fine-tuning runs: model/ checkpoint, epoch.csv, curves.png, eval/ report
    compare/             paired comparison of the two runs on the held-out cases
    fewshot/             feature caches, one run per shot count, sweep.csv / sweep.json
    results.json         every number the report shows, and the stage times
    report.html          the self-contained report
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from samadapt.demo.budget import Budget
from samadapt.errors import UserError

MODEL = "sam2-hiera-tiny"
MARKER = ".samadapt-demo"
RUN_LABELS = ("random-init", "mae-init")


@dataclass
class DemoInput:
    """The labelled dataset to fine-tune on and, in phantom mode, the few-shot phantoms to make."""

    dataset_path: Path | None  # None: generate FA phantoms
    dims: str = "2d"


def check_user_data(path: Path) -> DemoInput:
    """Everything about `--data` that can be checked before any output is written."""
    from samadapt.data.dataset import load_dataset

    if not path.exists():
        raise UserError("--data: dataset not found", path)
    dataset = load_dataset(path)
    if not dataset.spec.labeled or not dataset.labeled_cases():
        raise UserError("--data: the dataset has no masks; the demo fine-tunes and scores against masks", path)
    if len({c.patient for c in dataset.labeled_cases()}) < 3:
        raise UserError("--data: need labelled images of at least 3 patients (train, validation, test)", path)
    from samadapt.data.check import require_readable

    require_readable(dataset.cases)  # a broken file or foreign label fails now, not after pre-training
    return DemoInput(path, dataset.labeled_cases()[0].dims)


def prepare_out(out: Path) -> Path:
    """Create `out`, replacing an earlier demo output there; refuse to overwrite anything else."""
    from samadapt.engine.atomic import check_output_dir, ensure_writable_dir

    check_output_dir(out)
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise UserError("--out folder is not empty and was not written by `samadapt demo`; choose another", out)
        shutil.rmtree(out)
    ensure_writable_dir(out)
    (out / MARKER).write_text("written by samadapt demo; the whole folder is replaced on the next run\n")
    return out


def make_data(out: Path, budget: Budget, demo_input: DemoInput, seed: int) -> dict:
    """Generate phantoms (or take the user's dataset) and write the train/val/test split."""
    from samadapt.data.dataset import load_dataset
    from samadapt.data.phantoms import generate_phantoms, save_montage
    from samadapt.data.splits import make_splits, write_splits

    info: dict = {"mode": "phantoms" if demo_input.dataset_path is None else "user data"}
    if demo_input.dataset_path is None:
        description = generate_phantoms(out / "data" / "fa", n=budget.fa_frames, size=budget.finetune_size,
                                        seed=seed, kind="fa", unlabeled=budget.fa_unlabeled)
        pretrain_sources = [str(out / "data" / "fa" / "unlabeled")]
        save_montage(out / "data" / "fa", out / "data" / "fa_examples.png", count=6, tile=160)
        info["montage"] = str(out / "data" / "fa_examples.png")
    else:
        description = demo_input.dataset_path
        pretrain_sources = [str(description)]
    dataset = load_dataset(description)
    if demo_input.dataset_path is None:  # phantoms: the budget's exact train / val / test counts
        test_fraction = budget.fa_test / budget.fa_frames
        val_fraction = budget.fa_val / (budget.fa_train + budget.fa_val)
    else:
        test_fraction, val_fraction = 0.25, 0.2
    splits = make_splits(dataset, folds=1, seed=seed, test_fraction=test_fraction, val_fraction=val_fraction)
    write_splits(splits, out / "splits.json")
    parts = {"train": splits["splits"][0]["train"]["cases"], "val": splits["splits"][0]["val"]["cases"],
             "test": splits["test"]["cases"]}
    if not parts["test"]:
        raise UserError("--data: too few patients to hold out a test set", description)
    info.update(dataset=str(description), name=dataset.name, classes=dataset.class_names,
                dims=dataset.labeled_cases()[0].dims, pretrain_sources=pretrain_sources,
                cases={k: len(v) for k, v in parts.items()}, splits=str(out / "splits.json"),
                unlabeled=budget.fa_unlabeled if demo_input.dataset_path is None else 0)
    return info


def run_pretraining(out: Path, budget: Budget, data: dict, seed: int) -> dict:
    from samadapt.data.torch_datasets import UnlabeledImageDataset  # noqa: F401  (import errors early)
    from samadapt.pretrain.train import PretrainConfig, run_pretrain

    run_dir = out / "pretrain"
    n_images = _count_pretrain_images(data["pretrain_sources"], budget.pretrain_size)
    batch = max(1, min(budget.pretrain_batch, n_images))
    config = PretrainConfig(
        data=data["pretrain_sources"], out=str(run_dir), model=MODEL, image_size=budget.pretrain_size,
        epochs=budget.pretrain_epochs, batch_size=batch, lr=budget.pretrain_lr,
        warmup_epochs=min(1.0, budget.pretrain_epochs), seed=seed, recon_every=max(1, budget.pretrain_epochs // 2),
        checkpoint_every=0, command="samadapt demo",
    )
    summary = stop_if_interrupted(run_pretrain(config, progress=True))
    pictures = sorted((run_dir / "recon").glob("epoch-*.png"))
    return {"run": str(run_dir), "encoder": summary["encoder"], "images": n_images, "batch_size": batch,
            "epochs": summary["epochs_completed"], "steps": summary["global_step"],
            "final_loss": summary["last_train"].get("loss"), "recon": [str(p) for p in pictures],
            "first_recon": str(pictures[0]) if pictures else None, "last_recon": str(pictures[-1]) if pictures else None,
            "mask_ratio": config.mask_ratio, "image_size": config.image_size}


def stop_if_interrupted(summary: dict) -> dict:
    """A training stage stopped by Ctrl-C or SIGTERM saves its checkpoint and returns; the demo
    must then stop too (exit 130), not go on with a half-trained model."""
    if summary.get("status") == "interrupted":
        raise KeyboardInterrupt
    return summary


def _count_pretrain_images(sources: list[str], size: int) -> int:
    from samadapt.data.dataset import find_description, load_dataset
    from samadapt.data.torch_datasets import UnlabeledImageDataset

    resolved = []
    for item in sources:
        path = Path(item)
        described = path.suffix.lower() in (".yaml", ".yml", ".json") if path.is_file() else find_description(path)
        resolved.append(load_dataset(path) if described else path)
    return len(UnlabeledImageDataset(resolved, size))


def run_finetuning(out: Path, budget: Budget, data: dict, pretrain: dict, seed: int) -> dict:
    """Train from random weights and from the MAE encoder with the same budget, then score both
    on the held-out test cases."""
    from samadapt.finetune.training import finetune

    precision = finetune_precision(budget)
    runs = {}
    for label, init in zip(RUN_LABELS, ("random", f"mae:{pretrain['run']}")):
        run_dir = out / "finetune" / label
        config = finetune_config(run_dir, budget, data, init, seed)
        print(f"    {label}: {budget.finetune_epochs} epochs, {budget.finetune_train} trains, lr {budget.finetune_lr:g}, "
              f"recipe {'pretrained' if init != 'random' else 'scratch'}, {'bf16 autocast' if precision == 'bf16' else 'fp32'}")
        summary = stop_if_interrupted(finetune(config))
        runs[label] = {"run": str(run_dir), "init": init, "recipe": summary["recipe"],
                       "best_val_dice": summary["best"]["value"],
                       "best_step": summary["best"]["step"], "epochs": summary["epochs_completed"],
                       "seconds_per_epoch": summary["seconds_per_epoch"], "parameters": summary["parameters"],
                       "curves_csv": str(run_dir / "epoch.csv"), "precision": precision}
    return runs


def finetune_config(run_dir: Path, budget: Budget, data: dict, init: str, seed: int, progress: bool = True):
    """The fine-tuning settings every arm of the demo shares; only the start (`init`) differs."""
    from samadapt.finetune.training import FinetuneConfig

    return FinetuneConfig(
        data=data["dataset"], splits=data["splits"], out=str(run_dir), model=MODEL,
        image_size=budget.finetune_size, init=init, loss="dice+bce", train=budget.finetune_train,
        epochs=budget.finetune_epochs, batch_size=budget.finetune_batch, lr=budget.finetune_lr, seed=seed,
        keep="best", progress=progress, presence=budget.finetune_presence, precision=finetune_precision(budget),
    )


def finetune_precision(budget: Budget) -> str:
    """bf16 autocast when the budget asks for it and this machine has bf16 matrix units (CPU) or
    bf16 support (GPU); elsewhere bf16 would be emulated and slower than fp32, so "auto"."""
    import torch

    from samadapt.modeling.fast.encoder import native_bf16_cpu

    if not budget.finetune_bf16:
        return "auto"
    fast = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else native_bf16_cpu()
    return "bf16" if fast else "auto"


def evaluate_finetuned(out: Path, data: dict, runs: dict) -> dict:
    """Score each fine-tuned model on the test part of the split (never seen in training or selection)."""
    from samadapt.demo.stages import case_progress
    from samadapt.evaluate.report import evaluate_cases
    from samadapt.finetune.evaluation import run_split_cases, split_cases_for_run
    from samadapt.finetune.runs import load_finetune_run

    results = {}
    for label, run in runs.items():
        loaded = load_finetune_run(run["run"])
        cases = split_cases_for_run(Path(data["dataset"]), Path(data["splits"]), "test", 0, loaded.class_names)
        bar, tick = case_progress(len(cases), f"evaluate {label}")
        try:
            result = evaluate_cases(run_split_cases(loaded.model, cases), Path(run["run"]) / "eval",
                                    class_names=loaded.class_names, on_case=tick)
        finally:
            bar.close()
        run["eval"] = str(result.out_dir)
        results[label] = {"dir": str(result.out_dir), "summary": result.summary,
                          "overlays": sorted(str(p) for p in (result.out_dir / "overlays").glob("*.png"))}
    return results


def compare(out: Path, evaluations: dict) -> dict:
    """Paired comparison on every test case, and again on the cases whose reference is not empty:
    an empty reference predicted empty scores 1, so lesion-free frames alone can carry a difference."""
    from samadapt.evaluate.compare import COMPARE_PNG, compare_runs

    folders = [evaluations[label]["dir"] for label in RUN_LABELS]
    result = compare_runs(folders, out / "compare", metric="dice", n_resamples=2000, seed=0)  # + with_reference
    result["png"] = str(out / "compare" / COMPARE_PNG)
    return result


def write_results(out: Path, results: dict) -> Path:
    from samadapt.engine.atomic import atomic_write_text
    from samadapt.evaluate.report import json_ready

    path = out / "results.json"
    atomic_write_text(path, json.dumps(json_ready(results), indent=2, default=str) + "\n")
    return path
