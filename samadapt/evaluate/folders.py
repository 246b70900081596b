"""Evaluation cases from folders of mask files paired by file stem.

Masks may be PNG/TIFF index masks (0 = background, 1..K), binary masks stored as {0, 255}, or NIfTI
label volumes; a prediction and its ground truth are paired when their names match without the
extension (`case7.png` with `case7.png`, `ct_01.nii.gz` with `ct_01.nii`) and without the `_mask`
that the predicting commands add (`case7_mask.png` with `case7.png`). Their `<stem>_overlay.png`
pictures, next to `<stem>_mask.*`, are not masks and are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from samadapt.errors import UserError
from samadapt.evaluate.report import EvaluationCase

MAX_NAMES_SHOWN = 5


def files_by_stem(folder: Path, what: str) -> dict[str, Path]:
    """{stem: path} of the image and volume files in `folder`; UserError if missing, empty or ambiguous."""
    from samadapt.data.io import file_stem, list_files

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{what} folder not found", folder)
    from samadapt.inference.predict import MASK_SUFFIX, OVERLAY_SUFFIX

    found: dict[str, Path] = {}
    files = list_files(folder)
    stems = {file_stem(path) for path in files}
    for path in files:
        stem = file_stem(path)
        if stem.endswith(OVERLAY_SUFFIX) and stem.removesuffix(OVERLAY_SUFFIX) + MASK_SUFFIX in stems:
            continue
        stem = stem.removesuffix(MASK_SUFFIX) or stem
        if stem in found:
            raise UserError(f"two {what} files share the name {stem!r}: {found[stem].name} and {path.name}", folder)
        found[stem] = path
    if not found:
        raise UserError(f"no mask files (PNG, TIFF, NIfTI...) in the {what} folder", folder)
    return found


def _listing(names: list[str]) -> str:
    shown = ", ".join(sorted(names)[:MAX_NAMES_SHOWN])
    return shown + (f", ... ({len(names) - MAX_NAMES_SHOWN} more)" if len(names) > MAX_NAMES_SHOWN else "")


def pair_by_stem(pred_dir: Path, gt_dir: Path) -> list[tuple[str, Path, Path]]:
    """[(case_id, prediction file, ground-truth file)] sorted by case id; every file must have a partner."""
    predictions = files_by_stem(pred_dir, "prediction")
    truths = files_by_stem(gt_dir, "ground-truth")
    no_truth = [s for s in predictions if s not in truths]
    no_prediction = [s for s in truths if s not in predictions]
    if no_truth or no_prediction:
        problems = []
        if no_truth:
            problems.append(f"{len(no_truth)} prediction file(s) in {pred_dir} without ground truth: {_listing(no_truth)}")
        if no_prediction:
            problems.append(f"{len(no_prediction)} ground-truth file(s) in {gt_dir} without prediction: {_listing(no_prediction)}")
        raise UserError("prediction and ground-truth folders do not match; " + "; ".join(problems))
    return [(stem, predictions[stem], truths[stem]) for stem in sorted(predictions)]


def read_index_mask(path: Path) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """An index mask and its voxel spacing (None for 2D files).

    A 2D mask whose values are exactly {0, 255} (or {255}) is a binary mask and becomes {0, 1};
    grey masks saved as RGB are accepted, colour masks are not (their colours name no class).
    """
    from samadapt.data.io import is_volume_file, read_image
    from samadapt.data.volumes import read_volume

    path = Path(path)
    if is_volume_file(path):
        volume = read_volume(path)
        data = np.asarray(volume.data)
        if data.dtype.kind == "f" and not np.array_equal(data, np.round(data)):
            raise UserError("label volume has non-integer values; expected class indices", path)
        return data.astype(np.int64, copy=False), volume.spacing
    array = read_image(path, keep_indices=True)
    if array.ndim == 3:
        if array.shape[-1] in (2, 4):  # drop alpha
            array = array[..., :-1]
        if not all(np.array_equal(array[..., 0], array[..., c]) for c in range(1, array.shape[-1])):
            raise UserError("colour mask; expected an index mask (0 = background, 1..K) or a {0, 255} binary mask", path)
        array = array[..., 0]
    values = np.unique(array)
    if values.size and set(values.tolist()) <= {0, 255} and 255 in values:
        array = array == 255
    return array.astype(np.int64), None


def read_overlay_image(path: Path | None) -> np.ndarray | None:
    from samadapt.data.io import is_volume_file, read_image
    from samadapt.data.volumes import read_volume

    if path is None:
        return None
    return np.asarray(read_volume(path).data) if is_volume_file(path) else read_image(path)


def cases_from_folders(pred_dir: Path, gt_dir: Path, image_dir: Path | None = None,
                       n_classes: int | None = None) -> tuple[int, Iterator[EvaluationCase]]:
    """Pair the folders now (so mismatches fail before any work) and read the cases lazily.

    Returns (number of cases, iterator of cases). Images, when given, are paired by stem too; a case
    without an image is drawn on black. A label value that is no class is refused, naming its file:
    above `n_classes` (the `--classes` given), or, without them, a predicted value that no
    ground-truth mask holds (it would be scored as an invented class). The last check runs once every
    case is read, before the report is written.
    """
    pairs = pair_by_stem(Path(pred_dir), Path(gt_dir))
    images = files_by_stem(Path(image_dir), "image") if image_dir is not None else {}

    def generate() -> Iterator[EvaluationCase]:
        gt_labels: set[int] = set()
        first_seen: dict[int, Path] = {}  # predicted label -> the first prediction holding it
        for case_id, pred_path, gt_path in pairs:
            pred, _ = read_index_mask(pred_path)
            gt, spacing = read_index_mask(gt_path)
            if pred.shape != gt.shape:
                raise UserError(f"prediction {pred_path} has shape {pred.shape} but ground truth {gt_path} has {gt.shape}")
            for path, mask in ((gt_path, gt), (pred_path, pred)):
                if n_classes is not None and int(mask.max(initial=0)) > n_classes:
                    raise UserError(f"label value {int(mask.max())} is not one of the {n_classes} --classes", path)
            gt_labels.update(int(v) for v in np.unique(gt))
            for value in np.unique(pred):
                first_seen.setdefault(int(value), pred_path)
            image = read_overlay_image(images.get(case_id))
            if image is not None and image.shape[: gt.ndim] != gt.shape:
                raise UserError(f"image shape {image.shape} does not match the mask shape {gt.shape}", images[case_id])
            yield EvaluationCase(case_id, pred, gt, image, spacing)
        stray = sorted(set(first_seen) - gt_labels - {0})
        if n_classes is None and stray:
            known = ", ".join(str(v) for v in sorted(gt_labels - {0})) or "none"
            raise UserError(f"label value {stray[0]} is in no ground-truth mask (their labels: {known}), so it is no "
                            "class; pass --classes NAMES to score it", first_seen[stray[0]])

    return len(pairs), generate()
