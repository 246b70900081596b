"""Studio latencies: a SAM2 click -> mask once the slice's features are cached, and one training
round (3 labelled slices -> predictions on every slice of a volume), with the feature cache's time
reported apart from training and prediction.

The studio's targets, on a 2-core CPU: click -> mask <= 150 ms at 512 px; 3 labelled slices ->
predictions on a 100-slice volume <= 10 s at 256 px (cache time separate). Random weights (the cost
does not depend on them); the volume is a bright disc on noise, labelled on 3 slices.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import median_seconds, write_result

MODEL = "sam2-hiera-tiny"


def _disc_volume(size: int, depth: int) -> np.ndarray:
    x, y = np.mgrid[:size, :size]
    disc = ((x - size / 2) ** 2 + (y - size / 2) ** 2 < (size / 4) ** 2).astype(np.float32)
    noise = np.random.default_rng(0).normal(0, 5, (size, size, depth)).astype(np.float32)
    return disc[:, :, None] * 100 + noise


def _studio(folder: Path, size: int, depth: int, image_size: int, epochs: int):
    from samadapt.data.volumes import Volume, volume_to_bytes
    from samadapt.studio.config import StudioConfig
    from samadapt.studio.session import Studio

    folder.mkdir(parents=True)
    (folder / "volume.nii.gz").write_bytes(volume_to_bytes(Volume(_disc_volume(size, depth), np.eye(4)), gz=True))
    return Studio(folder, StudioConfig(model=MODEL, image_size=image_size, epochs=epochs), None)


def measure_click(image_size: int, clicks: int = 20) -> dict:
    """First click (encoder + decoder) and the median later click (decoder only) on one slice."""
    with tempfile.TemporaryDirectory(prefix="samadapt-bench-studio-") as tmp:
        studio = _studio(Path(tmp) / "folder", image_size, 4, image_size, 1)
        image = studio.image("volume")
        unit, prompter = image.unit(1), studio.prompter
        studio.warm_up().join()  # the server builds the model at start, not at a click
        started = time.perf_counter()
        prompter.segment(("volume", 1), unit, [(image_size / 2, image_size / 2, 1)], None)
        first = time.perf_counter() - started
        rng = np.random.default_rng(0)
        later, _ = median_seconds(lambda: prompter.segment(("volume", 1), unit, [
            (*rng.uniform(0, image_size, 2), 1), (*rng.uniform(0, image_size, 2), 0)], None), repeats=clicks, warmup=2)
    return {"image_size": image_size, "first_click_s": round(first, 3), "click_ms": round(later * 1000, 1)}


def measure_round(size: int, depth: int, image_size: int, epochs: int) -> dict:
    """One training round from 3 labelled slices, timed per phase (cache, training, prediction)."""
    with tempfile.TemporaryDirectory(prefix="samadapt-bench-studio-") as tmp:
        studio = _studio(Path(tmp) / "folder", size, depth, image_size, epochs)
        image, edits = studio.image("volume"), studio.edits("volume")
        truth = (image.stack > 50).astype(np.uint8)
        for version, index in enumerate((depth // 4, depth // 2, 3 * depth // 4)):
            edits.save_slice(index, truth[:, :, index], version)
        studio.warm_up().join()  # what the server does at start: imports and the model, not part of the round
        marks, update = [], studio.trainer.state.update

        def record(**fields):
            if "phase" in fields:
                marks.append((fields["phase"], time.perf_counter(), time.process_time()))
            update(**fields)

        studio.trainer.state.update = record
        studio.trainer.start(epochs)
        while studio.trainer.running:
            time.sleep(0.05)
        state = studio.trainer.state.snapshot()[1]
        if state["status"] != "done":
            raise RuntimeError(f"training round failed: {state['message']}")
        starts, cpu_starts = {}, {}
        for phase, when, cpu in marks:
            starts.setdefault(phase, when)
            cpu_starts.setdefault(phase, cpu)
        cache = starts["training"] - starts["caching"]
        train = starts["predicting"] - starts["training"]
        predict = starts["done"] - starts["predicting"]
        # the process's CPU time over training + prediction: the round's own work, whatever the load
        # (one torch thread; the benchmark's main thread only polls)
        round_cpu = cpu_starts["done"] - cpu_starts["training"]
        predicted = studio.predictions.get(studio.case("volume").key)
        dice = 2 * ((predicted > 0) & (truth > 0)).sum() / max(1, (predicted > 0).sum() + (truth > 0).sum())
    return {"volume": [size, size, depth], "image_size": image_size, "epochs": epochs, "labelled_slices": 3,
            "cache_s": round(cache, 2), "train_s": round(train, 2), "predict_s": round(predict, 2),
            "train_and_predict_s": round(train + predict, 2), "train_and_predict_cpu_s": round(round_cpu, 2),
            "dice_vs_threshold": round(float(dice), 3)}


def run(quick: bool = True) -> dict:
    """--quick: clicks at 256 px, a 20-slice volume at 128 px; otherwise the target sizes."""
    click = measure_click(256 if quick else 512)
    round_ = measure_round(128, 20, 128, 30) if quick else measure_round(256, 100, 256, 30)
    load = os.getloadavg()[0]
    print(f"click -> mask at {click['image_size']} px: {click['click_ms']} ms (first click, with the encoder: "
          f"{click['first_click_s']} s)")
    print(f"3 labelled slices -> {round_['volume'][2]} slices at {round_['image_size']} px: train {round_['train_s']} s"
          f" + predict {round_['predict_s']} s = {round_['train_and_predict_s']} s wall, "
          f"{round_['train_and_predict_cpu_s']} s CPU (cache {round_['cache_s']} s); "
          f"Dice vs the disc {round_['dice_vs_threshold']}")
    print(f"load average while measuring: {load:.1f}")
    result = {"click": click, "round": round_, "load_average_1min": round(load, 2),
              "targets_met": {"click<=150ms@512": None if quick else click["click_ms"] <= 150,
                              "round<=10s@256x100": None if quick else round_["train_and_predict_s"] <= 10,
                              "round<=10s_cpu@256x100": None if quick else round_["train_and_predict_cpu_s"] <= 10}}
    write_result("studio", result)
    return result
