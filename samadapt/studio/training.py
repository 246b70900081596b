"""The retrain loop: the user's labelled slices become few-shot shots, the decoder trains in a
background thread, then every slice of every case of the same kind is predicted.

One round: write the edits as label files next to the studio state (the layout `samadapt fewshot`
reads), cache the encoder features of every slice once (`samadapt.fewshot.cache.build_cache`;
later rounds reuse them), train with `samadapt.fewshot.train.train_fewshot` (the encoder never
runs), and predict from the cached features with the run's stored prototypes.
"""

from __future__ import annotations

import copy
import threading
import time
import traceback
from pathlib import Path

import numpy as np

from samadapt.errors import UserError

PREDICT_BATCH = 8  # cached slices through the decoder at once


class JobState:
    """What the browser sees of the training job (polled or streamed as server-sent events)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.serial = 0
        self.value = {"status": "idle", "job": "", "phase": "", "done": 0, "total": 0, "message": "", "round": 0}

    def update(self, **fields) -> None:
        with self.changed:
            self.value = {**self.value, **fields}
            self.serial += 1
            self.changed.notify_all()

    def snapshot(self) -> tuple[int, dict]:
        with self.lock:
            return self.serial, dict(self.value)

    def wait_change(self, serial: int, timeout: float) -> tuple[int, dict]:
        with self.changed:
            self.changed.wait_for(lambda: self.serial != serial, timeout=timeout)
            return self.serial, dict(self.value)


def epoch_progress(state: JobState, epochs: int):
    """A trainer callback that reports each finished epoch (torch is imported only when training)."""
    from samadapt.engine.callbacks import Callback

    class EpochProgress(Callback):
        def on_epoch_end(self, trainer, epoch, metrics) -> None:
            loss = metrics.get("loss")
            state.update(phase="training", done=epoch + 1, total=epochs,
                         message=f"epoch {epoch + 1}/{epochs}" + (f", loss {loss:.3f}" if loss is not None else ""))

    return EpochProgress()


class Trainer:
    """Runs one job at a time (a training round or a propagation) for a `samadapt.studio.session.Studio`."""

    def __init__(self, studio, debug: bool = False):
        self.studio, self.debug = studio, debug
        self.state = JobState()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, epochs: int) -> None:
        """A training round: the decoder trains on the labelled slices, then every slice is predicted."""
        plan = self.studio.training_plan()  # bad state (no labels) answers the request, not the thread
        round_number = self.state.snapshot()[1]["round"] + 1
        self._launch("train", lambda: self._round(plan, epochs, round_number), round=round_number)

    def start_propagation(self, case_id: str) -> None:
        """SAM2's memory carries one volume's edited slices through its other slices."""
        self.studio.propagation_keys(case_id)  # bad state answers the request, not the thread
        self._launch("propagate", lambda: self.studio.propagate_case(case_id, self.state), case=case_id)

    def _launch(self, job: str, work, **fields) -> None:
        if self.running:
            raise UserError(f"{self.state.snapshot()[1]['job']} is already running")
        self.state.update(status="running", job=job, phase="preparing", done=0, total=0, message="", **fields)
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True, name=f"studio-{job}")
        self._thread.start()

    def _run(self, work) -> None:
        """`work()` returns the closing message; a `UserError` is the job's one-line failure."""
        self.studio.wait_until_warm()
        import torch

        started = time.perf_counter()
        try:
            with torch.random.fork_rng(devices=[]):
                message = work()
            self.state.update(status="done", phase="done", message=f"{message} in {time.perf_counter() - started:.1f} s")
        except UserError as exc:
            self.state.update(status="failed", phase="failed", message=str(exc))
        except Exception as exc:  # a bug: one line for the browser, the traceback only with --debug
            if self.debug:
                traceback.print_exc()
            self.state.update(status="failed", phase="failed", message=f"internal error: {type(exc).__name__}: {exc}")

    def _round(self, plan, epochs: int, round_number: int) -> str:
        from samadapt.fewshot.cache import build_cache
        from samadapt.fewshot.config import FewShotConfig
        from samadapt.fewshot.items import case_items
        from samadapt.fewshot.train import train_fewshot

        studio = self.studio
        work = studio.state_dir / "work"
        support = studio.write_training_labels(plan, work / f"round-{round_number:04d}" / "labels")
        targets = [c.case for c in studio.cases if c.case is not None and c.dims == plan.dims]
        total = sum(len(case_items(c)) for c in targets)
        counter = iter(range(1, total + 1))
        self.state.update(phase="caching", total=total)
        build_cache(targets, work / "cache", studio.config.model, studio.weights, studio.config.image_size,
                    model=studio.prompter.model,
                    on_item=lambda *_: self.state.update(done=next(counter), message="encoding slices"))
        config = FewShotConfig(shots=plan.shots, epochs=epochs, seed=0, batch_size=min(4, plan.shots))
        run_dir = work / f"round-{round_number:04d}" / "run"
        self.state.update(phase="training", done=0, total=epochs, message="")
        # A copy of the prompting model (building one takes seconds): training changes its mask
        # decoder, and the clicks keep SAM2's own.
        model = copy.deepcopy(studio.prompter.model)
        # a round is never resumed: its training state is saved once, at the end
        train_fewshot(support, studio.classes, work / "cache", run_dir, config, progress=False,
                      callbacks=[epoch_progress(self.state, epochs)], dataset_name="studio", model=model,
                      checkpoint_every_epochs=epochs)
        return f"predicted {self._predict_all(run_dir, work / 'cache', targets, model)} slices"

    def _predict_all(self, run_dir: Path, cache_dir: Path, targets, model) -> int:
        from samadapt.fewshot.cache import FeatureCache
        from samadapt.fewshot.predict import load_fewshot_run

        run, cache = load_fewshot_run(run_dir, model=model), FeatureCache(cache_dir)
        total = sum(self.studio.image(c.id).slices for c in targets)
        self.state.update(phase="predicting", done=0, total=total, message="")
        done = 0
        for case in targets:
            image = self.studio.image(case.id)
            stack = np.zeros(image.stack.shape, dtype=np.uint8)
            items = [case.id] if case.dims != "3d" else [f"{case.id}:z{z:03d}" for z in range(image.slices)]
            for start in range(0, len(items), PREDICT_BATCH):
                batch = items[start:start + PREDICT_BATCH]
                for offset, labels in enumerate(predict_cached(run, cache, batch)):
                    stack[:, :, start + offset] = labels
                done += len(batch)
                self.state.update(done=done)
            self.studio.predictions.put(self.studio.case(case.id).key, stack)
        return done


def predict_cached(run, cache, item_ids: list[str]) -> list[np.ndarray]:
    """(H, W) uint8 labels of cached items with a few-shot run (the decoder only, one batch)."""
    import torch

    from samadapt.data.preprocess import Letterbox, restore_logits
    from samadapt.modeling.fewshot_segmenter import labels_from_logits
    from samadapt.modeling.segment_anything import ImageFeatures

    features = [cache.load(i).as_dict() for i in item_ids]
    batch = ImageFeatures.from_dict({k: torch.cat([f[k] for f in features]) for k in features[0]})
    size, out = cache.identity.image_size, []
    with torch.inference_mode():
        logits = run.segmenter(batch, run.prototypes)  # (B, C, S/4, S/4)
    for item_id, item_logits in zip(item_ids, logits):
        entry = cache.entry(item_id)
        box = Letterbox(tuple(entry["original_hw"]), tuple(entry["resized_hw"]), size)
        out.append(labels_from_logits(restore_logits(item_logits, box)).to(torch.uint8).numpy())
    return out
