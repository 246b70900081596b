"""Score a few-shot run (or a prompt baseline) on labelled cases with the shared evaluation report."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from samadapt.errors import UserError
from samadapt.fewshot.config import CacheSettings


def _evaluation_cases(cases, classes: list[str], predict_case: Callable) -> Iterator:
    from samadapt.data.masks import remap_classes
    from samadapt.evaluate.report import EvaluationCase

    for case in cases:
        image = case.load_image()
        gt = remap_classes(case.load_mask(), case.class_names, classes)
        spacing = None
        if case.dims == "3d":
            from samadapt.data.volumes import read_volume

            spacing = read_volume(case.image).spacing
        yield EvaluationCase(case.id, predict_case(case, image, gt), gt, image=image, spacing=spacing,
                             slice_axis=case.slice_axis if case.dims == "3d" else None)


def evaluate_predictions(cases, classes: list[str], out_dir: str | Path, predict_case: Callable, overlays: bool = True,
                         with_hd95: bool = False, nsd_tolerance: float | None = None, inputs: dict | None = None):
    """`predict_case(case, image, gt) -> index mask` for each case, scored by `evaluate_cases`."""
    from samadapt.evaluate.report import evaluate_cases

    cases = [c for c in cases if c.labeled]
    if not cases:
        raise UserError("no labelled cases to evaluate")
    return evaluate_cases(_evaluation_cases(cases, classes, predict_case), out_dir, class_names=classes, overlays=overlays,
                          with_hd95=with_hd95, nsd_tolerance=nsd_tolerance, inputs=inputs)


def check_run_inputs(run, run_dir, dataset, cases, splits, data) -> None:
    """Refuse a dataset whose classes are not the run's, volumes scaled otherwise than the support,
    or a description or splits file that changed since the run was trained (`engine.provenance`)."""
    from samadapt.data.intensity import check_same_intensity
    from samadapt.engine.provenance import check_evaluation_inputs, check_same_classes

    for case in cases:  # the precise reason first, when the description changed in this one way
        if case.dims == "3d":
            check_same_intensity(run.config.get("intensity"), case.intensity, "the few-shot run's support", case.image)
    if set(dataset.class_names) != set(run.classes):
        check_same_classes(run.classes, dataset.class_names, "the dataset", data)
    check_evaluation_inputs(run.config.get("inputs") or {}, run_dir, splits=splits, data=data)


def evaluate_run(run, cases, out_dir: str | Path, largest_component: bool = False, exclude_support: bool = True,
                 batch_size: int = CacheSettings.batch_size, overlays: bool = True, with_hd95: bool = False,
                 nsd_tolerance: float | None = None, inputs: dict | None = None, propagation=None):
    """Predict every case with a few-shot run and write the evaluation report into `out_dir`.

    exclude_support: leave out the cases the shots came from (a fair score without a split file).
    propagation: volumes are predicted by seeded SAM2 propagation (`samadapt.fewshot.propagate`).
    """
    from samadapt.data.preprocess import unit_image
    from samadapt.fewshot.predict import segment_units, segment_volume

    if exclude_support:
        support_cases = {item.split(":z")[0] for item in run.config.get("support", [])}
        cases = [c for c in cases if c.id not in support_cases]
    from samadapt.data.intensity import check_same_intensity

    for case in cases:
        if case.dims == "3d":
            check_same_intensity(run.config.get("intensity"), case.intensity, "the few-shot run's support", case.image)

    def predict_case(case, image: np.ndarray, gt: np.ndarray) -> np.ndarray:
        if case.dims == "3d":
            return segment_volume(run, image, batch_size, largest_component, propagation)
        return segment_units(run, [unit_image(image)], batch_size)[0]

    return evaluate_predictions(cases, run.classes, out_dir, predict_case, overlays=overlays, with_hd95=with_hd95,
                                nsd_tolerance=nsd_tolerance, inputs=inputs)
