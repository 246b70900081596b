"""Zero-shot prompt baselines: SAM2/SAM given ground-truth prompts, scored in the same harness.

For every class and every connected component of its ground-truth mask (on the model's square):
  * point: one positive point at the component's most interior pixel (the maximum of its distance
    transform; the centroid of a curved structure can fall outside it);
  * box: the component's bounding box.
Each component is one decoder query; a class's logit map is the maximum over its components, and
the label map takes, per pixel, the class with the highest positive logit, as few-shot prediction does.
These baselines are optimistic (they see the ground truth) and need a user click or box per structure.
"""

from __future__ import annotations

import numpy as np
import torch

from samadapt.errors import UserError
from samadapt.options import flag

PROMPT_KINDS = ("point", "box")


def component_prompts(mask: np.ndarray, num_classes: int, kind: str) -> list[tuple[int, list[float]]]:
    """[(class 1..C, prompt)], prompt = [x, y] (point) or [x0, y0, x1, y1] (box), for each component of (S, S) `mask`."""
    from scipy import ndimage

    if kind not in PROMPT_KINDS:
        raise UserError(f"{flag('prompt')} must be one of {', '.join(PROMPT_KINDS)}, got {kind!r}")
    prompts = []
    for value in range(1, num_classes + 1):
        components, count = ndimage.label(mask == value)
        for index in range(1, count + 1):
            inside = components == index
            ys, xs = np.nonzero(inside)
            if kind == "box":
                prompts.append((value, [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]))
            else:
                depth = ndimage.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]
                y, x = np.unravel_index(int(depth.argmax()), depth.shape)
                prompts.append((value, [float(x) + 0.5, float(y) + 0.5]))
    return prompts


@torch.inference_mode()
def segment_with_prompts(model, unit: np.ndarray, gt: np.ndarray, num_classes: int, kind: str) -> np.ndarray:
    """Label map (H, W) of one (H, W, 3) [0, 1] image from ground-truth prompts derived from `gt` (H, W)."""
    from samadapt.data.preprocess import restore_logits
    from samadapt.fewshot.items import model_input, model_mask
    from samadapt.modeling.fewshot_segmenter import labels_from_logits

    pixels, box = model_input(unit, model.image_size)
    prompts = component_prompts(model_mask(gt, box).numpy(), num_classes, kind)
    if not prompts:
        return np.zeros(gt.shape, dtype=np.uint8)
    features = model.encode(pixels[None])
    values = torch.tensor([p for _, p in prompts], dtype=torch.float32)
    if kind == "box":
        out = model.decode(features, boxes=values[None])
    else:
        out = model.decode(features, points=values[None, :, None])
    logits = restore_logits(out.logits[0, :, 0], box)  # (Q, H, W)
    per_class = torch.full((num_classes, *logits.shape[-2:]), -1e4)
    for query, (value, _) in enumerate(prompts):
        per_class[value - 1] = torch.maximum(per_class[value - 1], logits[query])
    return labels_from_logits(per_class).to(torch.uint8).numpy()


def evaluate_baseline(model, cases, classes: list[str], out_dir, kind: str, overlays: bool = True):
    """Score the `kind` prompt baseline on labelled `cases` (3D cases slice by slice)."""
    from samadapt.data.preprocess import stack_slices, unit_image
    from samadapt.fewshot.evaluate import evaluate_predictions
    from samadapt.fewshot.items import unit_volume_slices

    def predict_case(case, image: np.ndarray, gt: np.ndarray) -> np.ndarray:
        if case.dims == "3d":
            units = unit_volume_slices(image, case.slice_axis)
            slices = [np.take(gt, z, axis=case.slice_axis) for z in range(len(units))]
            return stack_slices([segment_with_prompts(model, u, g, len(classes), kind) for u, g in zip(units, slices)],
                                case.slice_axis)
        return segment_with_prompts(model, unit_image(image), gt, len(classes), kind)

    return evaluate_predictions(cases, classes, out_dir, predict_case, overlays=overlays)
