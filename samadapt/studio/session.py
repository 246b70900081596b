"""What one running studio holds: the folder's cases, their images in memory, the edits, the
predictions, the prompt model and the training job."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from samadapt.errors import UserError
from samadapt.studio.cases import CaseImage, StudioCase, load_case_image, scan_cases
from samadapt.studio.config import STATE_DIR, StudioConfig
from samadapt.studio.exporting import TrainingPlan, write_labels
from samadapt.studio.prompting import SlicePrompter
from samadapt.studio.propagating import MemoryPropagator
from samadapt.studio.store import CaseEdits, Predictions

IMAGES_IN_MEMORY = 8


class Studio:
    def __init__(self, root: Path, config: StudioConfig, weights: Path | None, data: Path | None = None,
                 debug: bool = False):
        from samadapt.studio.training import Trainer

        self.root, self.config, self.weights, self.debug = Path(root).resolve(), config, weights, debug
        self.state_dir, self._data = self.root / STATE_DIR, data
        self.cases, self.classes = scan_cases(self.root, data, config.class_names())
        self._by_id = {c.id: c for c in self.cases}
        self._images: OrderedDict[str, CaseImage] = OrderedDict()
        self._edits: dict[str, CaseEdits] = {}
        self._lock = threading.Lock()
        self.predictions = Predictions(self.state_dir / "predictions")
        self.prompter = SlicePrompter(config.model, weights, config.image_size, config.features_per_case)
        self.propagator = MemoryPropagator(config.model, weights, config.image_size)
        self.trainer = Trainer(self, debug)
        # Set while no warm-up runs. Imports are not safe to race (transformers' lazy modules can be
        # seen half-initialised), so prompts and training rounds wait for the warm-up to finish.
        self._warm = threading.Event()
        self._warm.set()

    def warm_up(self) -> threading.Thread:
        """Import torch and the training code and build the prompt model in the background, so
        the first click and the first training round do not wait for them (seconds each on a CPU)."""
        def work():
            try:
                from samadapt.fewshot.config import FewShotConfig
                from samadapt.finetune.losses import parse_loss

                parse_loss(FewShotConfig.loss)  # imports MONAI: the slowest import of a training round
                self.prompter.model
            except Exception as exc:  # the first click or round reports the same problem to the page
                if self.debug:
                    raise
                print(f"samadapt studio: warm-up stopped: {exc}", flush=True)
            finally:
                self._warm.set()

        self._warm.clear()
        thread = threading.Thread(target=work, daemon=True, name="studio-warm-up")
        thread.start()
        return thread

    def wait_until_warm(self) -> None:
        """Block until the warm-up (if one runs) has imported and built what prompts and rounds use."""
        self._warm.wait()

    # ------------------------------------------------------------------ cases
    def case(self, case_id: str) -> StudioCase:
        found = self._by_id.get(case_id)
        if found is None:
            raise LookupError(f"no case {case_id!r} in the studio folder")
        if found.case is None:
            raise UserError(f"case {case_id!r} is unreadable: {found.error}")
        return found

    def image(self, case_id: str) -> CaseImage:
        with self._lock:
            if case_id in self._images:
                self._images.move_to_end(case_id)
                return self._images[case_id]
        loaded = load_case_image(self.case(case_id).case)
        with self._lock:
            self._images[case_id] = loaded
            while len(self._images) > IMAGES_IN_MEMORY:
                self._images.popitem(last=False)
        return loaded

    def edits(self, case_id: str) -> CaseEdits:
        item = self.case(case_id)
        with self._lock:
            if case_id not in self._edits:
                shape = (*item.shape[:2], 1) if item.dims != "3d" else self._stack_shape(item)
                self._edits[case_id] = CaseEdits(self.state_dir / "edits" / item.key, item.id, shape)
            return self._edits[case_id]

    @staticmethod
    def _stack_shape(item: StudioCase) -> tuple[int, int, int]:
        axis = item.case.slice_axis
        rest = [s for i, s in enumerate(item.shape) if i != axis]
        return (rest[0], rest[1], item.shape[axis])

    def reference(self, case_id: str) -> np.ndarray | None:
        """The dataset's own labels as a (A, B, N) stack, renumbered to the studio's classes."""
        from samadapt.data.masks import remap_classes

        case = self.case(case_id).case
        if not case.labeled:
            return None
        mask = remap_classes(case.load_mask(), case.class_names, self.classes)
        return mask[:, :, None] if case.dims != "3d" else np.moveaxis(mask, case.slice_axis, -1)

    def info(self, case_id: str) -> dict:
        item, image, edits = self.case(case_id), self.image(case_id), self.edits(case_id)
        planes = {"axial": image.slices}
        if item.dims == "3d":
            planes.update(coronal=image.stack.shape[1], sagittal=image.stack.shape[0])
        return {**item.summary(), "planes": planes, "window": list(image.window), "version": edits.version,
                "pixel_mm": {plane: list(image.pixel_mm(plane)) for plane in planes},
                "labelled_slices": edits.labelled_slices, "display_hw": list(image.display_hw()),
                "has_reference": bool(item.case.labeled),
                "has_prediction": self.predictions.get(item.key) is not None}

    # ------------------------------------------------------------------ training
    def training_plan(self) -> TrainingPlan:
        """The labelled cases and their shot count; a `UserError` saying what is missing otherwise."""
        classes = range(1, len(self.classes) + 1)
        usable, shots = [], 0
        for item in self.cases:
            if item.case is None or not self.edits(item.id).labelled_slices:
                continue
            labels = self.edits(item.id).labels
            showing_all = sum(all((labels[:, :, z] == c).any() for c in classes) for z in range(labels.shape[2]))
            if showing_all:
                usable.append(item)
                shots += showing_all
        if not usable:
            raise UserError(f"label every class ({', '.join(self.classes)}) on at least one slice before training")
        kinds = {c.dims for c in usable}
        if len(kinds) > 1:
            raise UserError("labels on both 2D images and volumes: train on one kind at a time")
        return TrainingPlan(kinds.pop(), usable, shots)

    def propagation_keys(self, case_id: str, edits: np.ndarray | None = None) -> list[int]:
        """The labelled slices of a volume's (A, B, N) edits (by default its latest); a `UserError`
        saying what is missing otherwise."""
        if self.case(case_id).dims != "3d":
            raise UserError("propagate works through the slices of a volume; this case is a 2D image")
        edits = self.edits(case_id).labels if edits is None else edits
        keys = [z for z in range(edits.shape[2]) if edits[:, :, z].any()]
        if not keys:
            raise UserError("label at least one slice of this volume before propagating")
        return keys

    def propagate_case(self, case_id: str, state) -> str:
        """Replace the case's prediction with its edits propagated by SAM2's memory (a job's work)."""
        item, image = self.case(case_id), self.image(case_id)
        edits = np.array(self.edits(case_id).labels, copy=True)  # edits may go on while it runs
        keys = self.propagation_keys(case_id, edits)
        state.update(phase="propagating")
        labels = self.propagator.propagate(
            image, edits, keys, on_step=lambda done, total, what: state.update(done=done, total=total,
                                                                         message=f"propagating {what}"))
        self.predictions.put(item.key, labels)
        return f"propagated slice(s) {', '.join(map(str, keys))} through {image.slices} slices"

    def write_training_labels(self, plan: TrainingPlan, folder: Path):
        return write_labels(self, plan.cases, folder)

    # ------------------------------------------------------------------ uploads
    def add_file(self, target: Path, body: bytes) -> dict:
        """Write an uploaded image/volume into FOLDER and list it (unreadable: listed with its error)."""
        from samadapt.engine.atomic import atomic_write_bytes

        atomic_write_bytes(target, body)
        self.rescan()
        added = next((c for c in self.cases if c.path.resolve() == target.resolve()), None)
        return added.summary() if added is not None else {"name": target.name, "error": "not listed"}

    def rescan(self) -> None:
        cases, _ = scan_cases(self.root, self._data, self.config.class_names())
        with self._lock:
            self.cases, self._by_id = cases, {c.id: c for c in cases}
