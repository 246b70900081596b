"""Predict a dataset split with a fine-tuned run and hand the cases to the shared evaluation report.

`run_split_cases` yields `EvaluationCase`s lazily (one prediction in memory at a time), for
`samadapt.evaluate.report.evaluate_cases`. Ground truth is re-indexed to the run's class order; a
dataset class the run was not trained on is refused rather than silently scored as background.
3D cases are predicted slice by slice along their slice axis and stacked back into a volume.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from samadapt.errors import UserError
from samadapt.options import flag

PARTS = ("val", "test", "train")


def resolve_split(run_info: dict, run_dir: Path, splits_file: Path | None, fold: int | None) -> tuple[Path, int]:
    """The splits file and fold to use: given ones, else those the run was trained with."""
    # runs saved before the key was renamed record the file as "split"
    recorded = run_info.get("splits") or run_info.get("split")
    splits = splits_file or (Path(recorded) if recorded else None)
    if splits is None:
        raise UserError(f"the run does not record its split: pass {flag('splits')} FILE", run_dir)
    return Path(splits), int(run_info.get("fold", 0) if fold is None else fold)


def split_cases_for_run(data: Path, splits_file: Path, part: str, fold: int, class_names: list[str],
                        run_info: dict | None = None):
    """The labelled cases of `part`, after checking the dataset's classes (and, given the run's
    recorded `run_info`, its volumes' intensity setting) against the run's."""
    from samadapt.data.dataset import load_dataset
    from samadapt.data.intensity import check_same_intensity
    from samadapt.data.splits import load_splits, split_cases

    if part not in PARTS:
        raise UserError(f"{flag('part')} must be one of {', '.join(PARTS)}, got {part!r}")
    dataset = load_dataset(data)
    if not dataset.spec.labeled:
        raise UserError("dataset has no masks to evaluate against", data)
    unknown = [c for c in dataset.class_names if c not in class_names]
    if unknown:
        raise UserError(f"dataset classes {unknown} are not among the model's classes {class_names}", data)
    if run_info is not None and dataset.spec.dims == "3d":
        check_same_intensity(run_info.get("intensity"), dataset.spec.intensity, "the fine-tuned model's training data", data)
    splits = load_splits(splits_file, dataset)
    if part != "test" and not 0 <= fold < len(splits["splits"]):
        raise UserError(f"{flag('fold')} {fold} is outside the split, which has folds 0..{len(splits['splits']) - 1}", splits_file)
    cases = [c for c in split_cases(dataset, splits, part, fold) if c.labeled]
    if not cases:
        raise UserError(f"the {part} part of the split has no labelled cases", splits_file)
    return cases


def predict_case(model, case) -> tuple[np.ndarray, np.ndarray]:
    """(image, predicted index mask) of a 2D case, or (volume, predicted label volume) of a 3D one."""
    from samadapt.data.intensity import scale_volume
    from samadapt.data.preprocess import stack_slices, volume_slices
    from samadapt.finetune.runs import segment_index

    image = case.load_image()
    if case.dims != "3d":
        return image, segment_index(model, image)
    scaled = scale_volume(image, case.intensity)  # one intensity scale for the whole volume, as in training
    slices = [segment_index(model, s) for s in volume_slices(scaled, case.slice_axis)]
    return image, stack_slices(slices, case.slice_axis)


def run_split_cases(model, cases) -> Iterator:
    """`EvaluationCase`s of `cases` predicted by `model` (a loaded run's model)."""
    from samadapt.data.masks import remap_classes
    from samadapt.evaluate.report import EvaluationCase

    from samadapt.data.volumes import read_volume

    for case in cases:
        image, pred = predict_case(model, case)
        gt = remap_classes(case.load_mask(), case.class_names, list(model.class_names))
        spacing = read_volume(case.image).spacing if case.dims == "3d" else None  # HD95, NSD in mm
        yield EvaluationCase(case.id, pred, gt, image=image, spacing=spacing)
