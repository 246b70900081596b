"""Prompt-free prediction with a trained few-shot run: 2D images -> index PNGs, NIfTI -> label volumes.

The run carries its prototypes, so no support image is needed. Volumes are segmented slice by slice
along the run's slice axis, `batch_size` slices per encoder call, and written with the input's
affine and header (same voxel grid and orientation). `largest_component` keeps, per class, only
the largest 3D connected component (removes scattered false positives on distant slices).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from samadapt.errors import UserError
from samadapt.fewshot.config import CacheSettings
from samadapt.modeling.prototypes import PrototypePrompter, SupportPrototypes
from samadapt.modeling.fewshot_segmenter import FewShotSegmenter, labels_from_logits
from samadapt.fewshot.train import RUN_MODEL_DIR


@dataclass
class FewShotRun:
    segmenter: FewShotSegmenter
    prototypes: SupportPrototypes
    classes: list[str]
    config: dict

    @property
    def image_size(self) -> int:
        return self.segmenter.sam.image_size

    @property
    def slice_axis(self) -> int:
        return int(self.config.get("slice_axis", 2))

    @property
    def intensity(self) -> str:
        """How the run's training volumes were scaled (runs from before the setting: the default)."""
        from samadapt.data.intensity import DEFAULT_INTENSITY

        return str(self.config.get("intensity") or DEFAULT_INTENSITY)


def load_fewshot_run(run_dir: str | Path, model=None) -> FewShotRun:
    """Rebuild the segmenter and its stored prototypes from `RUN_DIR/model`.

    `model`: the run's own model, still in memory (the one `train_fewshot` just trained): only the
    prompter and the prototypes are read, and the model is not built again."""
    from samadapt.modeling.loading import load_model_folder

    run_dir = Path(run_dir)
    folder = run_dir / RUN_MODEL_DIR
    if not folder.is_dir():
        raise UserError(f"not a few-shot run (no {RUN_MODEL_DIR}/ folder); train one with `samadapt fewshot train`", run_dir)
    if model is None:
        saved = load_model_folder(folder)
        sam, config, extra = saved.model, saved.extra_config.get("fewshot"), saved.extra_tensors
    else:
        from samadapt.modeling.model_folder import EXTRA_FILE, read_metadata, verified_file
        from samadapt.modeling.weight_files import read_safetensors

        meta = read_metadata(folder)
        sam, config = model, meta.get("extra_config", {}).get("fewshot")
        extra = read_safetensors(verified_file(folder, meta, EXTRA_FILE)) if EXTRA_FILE in meta["files"] else {}
    if config is None or "prototypes.foreground" not in extra:
        raise UserError("checkpoint holds no few-shot prototypes", folder)
    prompter = PrototypePrompter(sam.feature_dim)
    prompter.load_state_dict({k.removeprefix("prompter."): v for k, v in extra.items() if k.startswith("prompter.")})
    segmenter = FewShotSegmenter(sam.eval(), prompter).eval()
    prototypes = SupportPrototypes.from_tensors(extra)
    return FewShotRun(segmenter, prototypes, list(config["classes"]), config)


@torch.inference_mode()
def restored_logits(run: FewShotRun, units: list[np.ndarray], batch_size: int = 4):
    """Yield per-class mask logits (C, H, W) on each input's own grid for (H, W, 3) [0, 1] images."""
    from samadapt.data.preprocess import restore_logits
    from samadapt.fewshot.items import model_input

    for start in range(0, len(units), batch_size):
        inputs, boxes = zip(*(model_input(u, run.image_size) for u in units[start:start + batch_size]))
        features = run.segmenter.sam.encode(torch.stack(inputs))
        logits = run.segmenter(features, run.prototypes)
        for index, box in enumerate(boxes):
            yield restore_logits(logits[index], box)  # (C, H, W)


def segment_units(run: FewShotRun, units: list[np.ndarray], batch_size: int = 4) -> list[np.ndarray]:
    """Label maps (H, W) uint8 on each input's own grid for (H, W, 3) [0, 1] images."""
    return [labels_from_logits(logits).to(torch.uint8).numpy() for logits in restored_logits(run, units, batch_size)]


def keep_largest_components(labels: np.ndarray) -> np.ndarray:
    """Per class, zero all but the largest connected component (face connectivity)."""
    from scipy import ndimage

    out = labels.copy()
    for value in np.unique(labels):
        if value == 0:
            continue
        components, count = ndimage.label(labels == value)
        if count > 1:
            sizes = np.bincount(components.ravel())[1:]
            out[(components > 0) & (components != int(sizes.argmax()) + 1)] = 0
    return out


def segment_volume(run: FewShotRun, data: np.ndarray, batch_size: int = 4, largest_component: bool = False,
                   propagation=None) -> np.ndarray:
    """(X, Y, Z) volume -> label volume of the same shape, slice by slice along the run's axis, or,
    with `propagation` (a `samadapt.fewshot.propagate.VolumePropagation`), seeded SAM2 propagation."""
    from samadapt.data.preprocess import stack_slices
    from samadapt.fewshot.items import unit_volume_slices

    units = unit_volume_slices(data, run.slice_axis, run.intensity)
    predicted = (segment_units(run, units, batch_size) if propagation is None
                 else list(propagation.segment_slices(run, units, batch_size)))
    labels = stack_slices(predicted, run.slice_axis)
    return keep_largest_components(labels) if largest_component else labels


def collect_inputs(path: str | Path, series: str | None = None) -> tuple[list[Path], bool]:
    """(files, are_volumes): one volume (NIfTI, NRRD, MHA, multi-frame DICOM file or a DICOM series
    folder), a folder of volumes, or images (file or folder). `series` picks a SeriesInstanceUID and
    needs a single DICOM folder."""
    from samadapt.data.io import is_volume_file, list_files
    from samadapt.inference.predict import collect_images

    path = Path(path)
    if path.exists() and is_volume_file(path):
        found = [path]
    elif path.is_dir():
        found = list_files(path, volumes=True)
    else:
        found = []
    if series is not None and not (len(found) == 1 and found[0].is_dir()):
        raise UserError(f"--series {series!r} needs --input to be one DICOM series folder", path)
    if found:
        return found, True
    return collect_images(path), False


def check_volume_inputs(files: list[Path], series: str | None = None, dicom_seg: bool = False) -> None:
    """Headers only: a DICOM folder's series choice and slice order, other volumes' shapes; DICOM-SEG
    output needs every input to be a DICOM series folder."""
    from samadapt.data import dicom
    from samadapt.data.volumes import read_volume_shape

    for file in files:
        if dicom_seg and not file.is_dir():
            raise UserError("--dicom-seg writes segmentations referencing a DICOM series: the input must be DICOM "
                            "series folders", file)
        if file.is_dir():
            dicom.ordered_slices(dicom.choose_series(file, series), file)
        else:
            read_volume_shape(file)


def _predict_volumes(run: FewShotRun, files: list[Path], stage: Path, out_dir: Path, batch_size: int,
                     largest_component: bool, series: str | None, dicom_seg: bool, propagation=None) -> list[Path]:
    """Label volumes (and DICOM-SEG objects) of `files` written into `stage`; returns final paths."""
    from samadapt.data.io import file_stem
    from samadapt.data.volumes import output_suffix, read_volume, write_label_volume
    from samadapt.inference.predict import MASK_SUFFIX

    written = []
    for file in files:
        volume = read_volume(file, series=series)
        labels = segment_volume(run, volume.data, batch_size, largest_component, propagation)
        name = f"{file_stem(file)}{MASK_SUFFIX}{output_suffix(volume)}"
        write_label_volume(stage / name, labels, volume)
        written.append(out_dir / name)
        if dicom_seg:
            from samadapt.data.dicom_seg import SEG_SUFFIX, write_dicom_seg

            write_dicom_seg(stage / f"{file_stem(file)}{SEG_SUFFIX}", labels, volume, run.classes, series)
            written.append(out_dir / f"{file_stem(file)}{SEG_SUFFIX}")
    return written


def predict_path(run: FewShotRun, input_path: str | Path, out_dir: str | Path, batch_size: int = CacheSettings.batch_size,
                 largest_component: bool = False, series: str | None = None, dicom_seg: bool = False,
                 propagation=None) -> dict:
    """Write what `samadapt predict` writes for a fine-tuned run: `<stem>_mask.png` index masks and
    `<stem>_overlay.png` (2D) or `<stem>_mask.<input's format>` label volumes in the input's geometry
    (3D; DICOM input gives .nii.gz, and with `dicom_seg` also `<stem>_seg.dcm` referencing the
    series), and classes.json, through a staging folder (a failure leaves nothing behind); returns
    counts and timing. `propagation`: volumes are segmented by seeded SAM2 propagation
    (`samadapt.fewshot.propagate`), not slice by slice."""
    from samadapt.data.io import file_stem, png_bytes, read_image
    from samadapt.data.preprocess import unit_image
    from samadapt.engine.atomic import staged_dir
    from samadapt.inference.overlay import overlay_labels
    from samadapt.inference.predict import CLASSES_FILE, MASK_SUFFIX, OVERLAY_SUFFIX, classes_json

    files, volumes = collect_inputs(input_path, series)
    out_dir = Path(out_dir)
    started = time.perf_counter()
    written = []
    with staged_dir(out_dir) as stage:
        if volumes:
            written = _predict_volumes(run, files, stage, out_dir, batch_size, largest_component, series, dicom_seg,
                                       propagation)
        else:
            for start in range(0, len(files), batch_size):
                chunk = files[start:start + batch_size]
                images = [read_image(f) for f in chunk]
                predicted = segment_units(run, [unit_image(i) for i in images], batch_size)
                for file, image, labels in zip(chunk, images, predicted):
                    stem = file_stem(file)
                    (stage / f"{stem}{MASK_SUFFIX}.png").write_bytes(png_bytes(labels))
                    (stage / f"{stem}{OVERLAY_SUFFIX}.png").write_bytes(png_bytes(overlay_labels(image, labels)))
                    written.append(out_dir / f"{stem}{MASK_SUFFIX}.png")
        (stage / CLASSES_FILE).write_text(classes_json(run.classes))
    return {"files": [str(p) for p in written], "volumes": volumes, "seconds": time.perf_counter() - started}
