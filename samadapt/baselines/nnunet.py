"""`samadapt baseline nnunet`: nnU-Net v2 trained on one fold of a samadapt split, scored by samadapt.

    dataset + splits --(nnunet_format)--> private nnU-Net raw tree --(nnunet_worker, own process)-->
    plan, preprocess, train (short budget), predict --> predictions/ --(evaluate.report)--> eval/

The run folder is staged and published only when everything succeeded:

    RUN/summary.json            what ran (config, nnU-Net version, plan, budget) and the mean Dice
    RUN/predictions/<case>.*    index masks (PNG for 2D; volumes in the input's format and geometry)
    RUN/eval/                   per_case.csv, summary.json, summary.md: `samadapt compare` reads it
    RUN/nnunet/                 nnU-Net's own raw/preprocessed/results folders and its log
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

from samadapt.baselines.config import NnunetConfig
from samadapt.errors import UserError
from samadapt.options import flag

INSTALL_HINT = "nnU-Net v2 is not installed: pip install 'samadapt[nnunet]'"
# nnU-Net's per-epoch lines worth showing while it trains (the rest goes to the log only)
_PROGRESS = re.compile(r": (Epoch \d+|train_loss|val_loss|Pseudo dice|Epoch time)")


def require_nnunet() -> str:
    """nnunetv2's version, or a one-line UserError saying how to install it."""
    if importlib.util.find_spec("nnunetv2") is None:
        raise UserError(INSTALL_HINT)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nnunetv2")
    except PackageNotFoundError:
        raise UserError(INSTALL_HINT) from None


def _cases(config: NnunetConfig):
    """(dataset, training cases, scored cases), refusing what cannot be trained or scored."""
    from samadapt.data.dataset import load_dataset
    from samadapt.data.splits import load_splits, split_cases

    dataset = load_dataset(config.data)
    if not dataset.spec.labeled:
        raise UserError("dataset has no masks: nnU-Net needs labels to train", config.data)
    if config.configuration.startswith("3d") and dataset.spec.dims != "3d":
        raise UserError(f"{flag('configuration')} {config.configuration} needs a 3D dataset; this one is 2D "
                        "(use 2d)", config.data)
    if config.image_size is not None and dataset.spec.dims == "3d":
        raise UserError(f"{flag('image_size')} applies to 2D datasets; nnU-Net plans volumes at their own "
                        "voxel spacing", config.data)
    splits = load_splits(config.splits, dataset)
    train = [c for c in split_cases(dataset, splits, "train", config.fold) if c.labeled]
    scored = [c for c in split_cases(dataset, splits, config.part, config.fold) if c.labeled]
    if not scored:
        raise UserError(f"{flag('part')} {config.part} of fold {config.fold} has no labelled case to score",
                        config.splits)
    return dataset, train, scored


def _check_out(out: Path) -> None:
    from samadapt.engine.atomic import check_output_dir

    check_output_dir(out)
    if out.is_dir() and any(out.iterdir()):
        raise UserError("output folder is not empty; choose a new folder", out)


def _worker_env(work: Path, config: NnunetConfig) -> dict:
    env = dict(os.environ)
    env.update(nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(work / "preprocessed"),
               nnUNet_results=str(work / "results"), nnUNet_def_n_proc="1")
    if config.threads:
        env["OMP_NUM_THREADS"] = str(config.threads)
    return env


def _run_worker(job_file: Path, env: dict, log_file: Path) -> None:
    command = [sys.executable, "-m", "samadapt.baselines.nnunet_worker", str(job_file)]
    tail: list[str] = []
    with open(log_file, "w", encoding="utf-8") as log, subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as process:
        try:
            for line in process.stdout:
                log.write(line)
                tail = (tail + [line.strip()])[-3:]
                if match := _PROGRESS.search(line):
                    print("nnU-Net " + line[match.start() + 2:].strip(), flush=True)
        except BaseException:  # interrupted: nnU-Net must not train on into a deleted staging folder
            process.kill()
            raise
        code = process.wait()
    if code:
        raise RuntimeError(f"nnU-Net stopped with exit code {code}: {' | '.join(t for t in tail if t)}")


def _score(stage: Path, dataset, scored, raw_predictions: Path) -> dict:
    """Write samadapt-format predictions of the scored cases and evaluate them against their masks."""
    from samadapt.baselines.nnunet_format import FILE_ENDING, read_prediction
    from samadapt.data.io import write_mask_png
    from samadapt.data.volumes import output_suffix, read_volume, write_label_volume
    from samadapt.evaluate.report import EvaluationCase, evaluate_cases

    (stage / "predictions").mkdir()
    cases = []
    for case in scored:
        reference = case.load_mask()
        # 2D predictions come back at the size nnU-Net saw (--image-size) and are resampled to the case's
        shape = None if case.dims == "3d" else reference.shape
        pred = read_prediction(raw_predictions / f"{case.id}{FILE_ENDING}", case, shape)
        if case.dims == "3d":
            like = read_volume(case.image)  # the image, read once: geometry, spacing and overlay
            write_label_volume(stage / "predictions" / f"{case.id}{output_suffix(like)}", pred, like)
            image, spacing = like.data, like.spacing
        else:
            write_mask_png(stage / "predictions" / f"{case.id}.png", pred)
            image, spacing = case.load_image(), None
        cases.append(EvaluationCase(case.id, pred, reference, image, spacing))
    result = evaluate_cases(cases, stage / "eval", class_names=dataset.class_names)
    return result.summary


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (a scheduler's stop) ends the run like Ctrl-C: the child is killed, the staging folder
    removed, and the CLI exits 130. There is no checkpoint to resume from a shortened nnU-Net run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_nnunet(config: NnunetConfig) -> dict:
    """Convert, train, predict and score; returns the run's summary (also RUN/summary.json)."""
    from samadapt.baselines.nnunet_format import check_convertible, write_raw_dataset
    from samadapt.engine.atomic import atomic_write_text, staged_dir

    config.validate()
    nnunet_version = require_nnunet()
    out = Path(config.out)
    _check_out(out)
    dataset, train, scored = _cases(config)
    n_channels = check_convertible(dataset, train, scored)
    started = time.time()
    with _terminate_as_interrupt(), staged_dir(out) as stage:
        work = stage.resolve() / "nnunet"
        raw = write_raw_dataset(work / "raw", dataset, train, scored, n_channels, config.image_size)
        job = {"configuration": config.configuration, "epochs": config.epochs,
               "iterations_per_epoch": config.iterations_per_epoch, "device": config.device, "seed": config.seed,
               "threads": config.threads, "mirroring": config.mirroring, "train": [c.id for c in train],
               "images_to_predict": str(raw / "imagesTs"), "predictions": str(work / "predictions")}
        job_file = work / "job.json"
        job_file.write_text(json.dumps(job, indent=1) + "\n")
        print(f"nnU-Net {nnunet_version}: {len(train)} training cases, {config.configuration}, "
              f"{config.epochs} epochs x {config.iterations_per_epoch} iterations on {config.device}", flush=True)
        _run_worker(job_file, _worker_env(work, config), work / "nnunet.log")
        evaluation = _score(stage, dataset, scored, work / "predictions")
        summary = {"kind": "nnunet-baseline", "status": "finished", "config": asdict(config),
                   "nnunetv2": nnunet_version, "nnunet": json.loads((work / "done.json").read_text()),
                   "classes": dataset.class_names, "train_cases": len(train), "scored_cases": len(scored),
                   "seconds": round(time.time() - started, 1),
                   "dice": evaluation["mean_over_classes"]["dice"]}
        atomic_write_text(stage / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary

