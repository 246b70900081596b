"""The nnU-Net v2 half of `samadapt baseline nnunet`, run in its own process.

nnU-Net reads its folders (nnUNet_raw, nnUNet_preprocessed, nnUNet_results) from the environment
once, when `nnunetv2.paths` is imported; a child process started with the run's own folders keeps
them per run and never touches the caller's environment. Usage (by `baselines/nnunet.py` only):

    python -m samadapt.baselines.nnunet_worker JOB.json

JOB.json: {"configuration", "epochs", "iterations_per_epoch", "device", "seed", "threads", "mirroring",
"train": [case ids], "images_to_predict": folder, "predictions": folder}.
Writes `done.json` (the nnU-Net plan and the training length) next to JOB.json when it finishes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# nnU-Net's own iteration count for its validation pass, scaled down with the budget
VAL_ITERATIONS_FRACTION = 0.2


def _short_trainer_class(mirroring: bool):
    """nnU-Net's default trainer (or, without mirroring, its no-mirroring variant), with the number
    of epochs and iterations set by the job."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (
        nnUNetTrainerNoMirroring,
    )

    class nnUNetTrainerShortBudget(nnUNetTrainer if mirroring else nnUNetTrainerNoMirroring):
        pass

    return nnUNetTrainerShortBudget


def plan_and_preprocess(configuration: str) -> dict:
    """nnU-Net's fingerprint, experiment planning and preprocessing of dataset 1, for one configuration."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )
    from nnunetv2.paths import nnUNet_preprocessed

    extract_fingerprints([1], check_dataset_integrity=True, clean=True, verbose=False)
    plan_experiments([1])
    preprocess([1], configurations=(configuration,), num_processes=(1,), verbose=False)
    dataset_dir = next(Path(nnUNet_preprocessed).glob("Dataset001_*"))
    return json.loads((dataset_dir / "nnUNetPlans.json").read_text())


def train(job: dict, plans: dict):
    """Train on every case of the raw dataset, the fold's training cases (nnU-Net's fold "all": its
    per-epoch pseudo-Dice is then measured on training cases, and nothing is selected by it)."""
    import torch
    from nnunetv2.paths import nnUNet_preprocessed

    dataset_dir = next(Path(nnUNet_preprocessed).glob("Dataset001_*"))
    dataset_json = json.loads((dataset_dir / "dataset.json").read_text())
    # Augmentation in this process (nnU-Net's single-threaded loader): no worker processes on a small
    # CPU, and batches in a seeded order. Set only now: the planner wants a count >= 1 (it sizes threads).
    os.environ["nnUNet_n_proc_DA"] = "0"
    plans = {**plans, "continue_training": False}  # what nnU-Net's own launcher adds (a fresh run)
    trainer = _short_trainer_class(job["mirroring"])(plans, job["configuration"], "all", dataset_json, device=torch.device(job["device"]))
    trainer.num_epochs = job["epochs"]
    trainer.num_iterations_per_epoch = job["iterations_per_epoch"]
    trainer.num_val_iterations_per_epoch = max(1, round(job["iterations_per_epoch"] * VAL_ITERATIONS_FRACTION))
    trainer.save_every = job["epochs"]  # no intermediate checkpoints: only the final one is used
    trainer.run_training()
    return trainer


def predict(job: dict, trainer) -> None:
    """Predict every image of `images_to_predict` with the final network, nnU-Net's sliding window."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    trainer.set_deep_supervision_enabled(False)  # one output at full resolution, as nnU-Net predicts
    network = trainer.network._orig_mod if hasattr(trainer.network, "_orig_mod") else trainer.network
    network.eval()
    # test-time mirroring only where training mirrored (the no-mirroring trainer allows no axes)
    mirror = trainer.inference_allowed_mirroring_axes is not None
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirror,
                                perform_everything_on_device=job["device"] == "cuda",
                                device=torch.device(job["device"]), verbose=False, allow_tqdm=False)
    predictor.manual_initialization(network, trainer.plans_manager, trainer.configuration_manager,
                                    [network.state_dict()], trainer.dataset_json, type(trainer).__name__,
                                    trainer.inference_allowed_mirroring_axes)
    Path(job["predictions"]).mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files_sequential(job["images_to_predict"], job["predictions"], save_probabilities=False,
                                            overwrite=True)


def main(job_file: str) -> int:
    import torch

    from samadapt.engine.distributed import seed_everything

    job_path = Path(job_file)
    job = json.loads(job_path.read_text())
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    seed_everything(job["seed"])
    plans = plan_and_preprocess(job["configuration"])
    seed_everything(job["seed"])
    trainer = train(job, plans)
    predict(job, trainer)
    done = {"plans": {"configuration": job["configuration"],
                      **{k: plans["configurations"][job["configuration"]].get(k)
                         for k in ("patch_size", "batch_size", "spacing", "normalization_schemes")}},
            "trainer": type(trainer).__name__, "epochs": job["epochs"],
            "iterations_per_epoch": job["iterations_per_epoch"], "fold": trainer.fold,
            "mirror_axes": None if trainer.inference_allowed_mirroring_axes is None
            else list(trainer.inference_allowed_mirroring_axes)}
    (job_path.parent / "done.json").write_text(json.dumps(done, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
