"""Linear probes of frozen SAM2 image features: does an encoder hold what the labels need?

    python -m benchmarks.linear_probe --data runs/demo/data/fa/dataset.yaml --splits runs/demo/splits.json \
        --init random mae:runs/demo/pretrain [--image-size 256] [--threads 1]

Fine-tuning mixes two questions: do the encoder's features hold the information, and does training
find it within the budget. A probe answers the first alone. For each `--init` the image encoder
(trunk and neck) is frozen and every labelled image of the split's training, validation and test
parts is encoded once. A logistic regression per class then reads, at every stride-4 pixel, the
features the mask decoder reads: the stride-16 image embedding (bilinearly upsampled), the stride-8
and stride-4 high-resolution features, or all three side by side, standardised on the training
pixels. It trains on the training part; each class's decision threshold is chosen on the validation
part; the test part is scored by mean per-image Dice on the stride-4 grid (an empty reference
predicted empty scores 1, as in `samadapt evaluate`). A probe on the pixels themselves (each stride-4
cell's 4x4 pixels and the mean intensity around it at 16 and 64 px) is the floor that needs no
network. The first `--init` is the baseline of the paired differences (bootstrap 95 % CI over test
images). Writes benchmarks/results/linear_probe.json (`--name` for another).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import print_table, write_result

STRIDE = 4  # the probe's grid: SAM2's mask decoder predicts at a quarter of the input size
FEATURE_SETS = {"embedding": ("embedding",), "stride8": ("stride8",), "stride4": ("stride4",),
                "all": ("embedding", "stride8", "stride4")}
THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)


def load_parts(data: Path, splits: Path, image_size: int, fold: int = 0) -> tuple[dict, list[str]]:
    """{part: (pixels (N, 3, S, S), labels (N, S, S), valid (N, S, S), case ids)} and the class names."""
    from samadapt.data.dataset import load_dataset
    from samadapt.data.splits import load_splits, split_cases
    from samadapt.data.torch_datasets import SegmentationDataset

    dataset = load_dataset(data)
    split = load_splits(splits, dataset)
    parts = {}
    for part in ("train", "val", "test"):
        cases = [c for c in split_cases(dataset, split, part, fold) if c.labeled]
        items = SegmentationDataset(cases, image_size, dataset.class_names)
        samples = [items[i] for i in range(len(items))]
        parts[part] = tuple(torch.stack([s[k] for s in samples]) for k in ("image", "mask", "valid")) + (
            [s["case_id"] for s in samples],)
    return parts, dataset.class_names


def to_grid(labels: torch.Tensor, valid: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, S, S) labels and valid flags -> targets (N, K, S/4, S/4) bool (a cell is a class where
    most of its pixels are) and valid cells (N, S/4, S/4) bool."""
    onehot = torch.stack([(labels == c + 1) for c in range(n_classes)], 1).float()
    targets = F.avg_pool2d(onehot, STRIDE) > 0.5
    return targets, F.avg_pool2d(valid.float().unsqueeze(1), STRIDE)[:, 0] > 0.5


@torch.no_grad()
def encoder_features(model, pixels: torch.Tensor, batch: int = 4) -> dict[str, torch.Tensor]:
    """{embedding, stride8, stride4}, each (N, C, S/4, S/4): what the mask decoder reads, on the probe's grid."""
    grid = pixels.shape[-1] // STRIDE
    out = {name: [] for name in ("embedding", "stride8", "stride4")}
    for start in range(0, len(pixels), batch):
        features = model.encode(pixels[start:start + batch])
        stride4, stride8 = features.high_res
        for name, tensor in (("embedding", features.embedding), ("stride8", stride8), ("stride4", stride4)):
            out[name].append(F.interpolate(tensor.float(), size=(grid, grid), mode="bilinear", align_corners=False))
    return {name: torch.cat(tensors) for name, tensors in out.items()}


def pixel_features(pixels: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S) -> (N, 48 + 3 per local mean, S/4, S/4): each cell's 4x4 pixels and the mean
    around it at 16 and 64 px (where the image is that large)."""
    grid = pixels.shape[-1] // STRIDE
    patches = F.unfold(pixels, STRIDE, stride=STRIDE).reshape(len(pixels), -1, grid, grid)
    means = [F.interpolate(F.avg_pool2d(pixels, k), size=(grid, grid), mode="bilinear", align_corners=False)
             for k in (16, 64) if pixels.shape[-1] >= k]
    return torch.cat([patches, *means], 1)


def _rows(features: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(N, D, G, G) features -> (valid cells, D)."""
    return features.permute(0, 2, 3, 1)[valid]


def fit_probe(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-4, iterations: int = 200,
              max_rows: int = 200_000, seed: int = 0):
    """One-vs-rest logistic regression on standardised features: x (M, D), y (M, K) bool.
    Returns `predict(x) -> (M, K) probabilities`. Rows beyond `max_rows` are subsampled (seeded)."""
    if len(x) > max_rows:
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_rows]
        x, y = x[keep], y[keep]
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    z, target = (x - mean) / std, y.float()
    weight = torch.zeros(x.shape[1], y.shape[1], requires_grad=True)
    bias = torch.zeros(y.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z @ weight + bias, target) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    weight, bias = weight.detach(), bias.detach()
    return lambda rows: torch.sigmoid(((rows - mean) / std) @ weight + bias)


def image_dice(probability: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, thresholds) -> np.ndarray:
    """Per-image, per-class Dice (N, K) of `probability > thresholds[k]`; probability and targets are
    (N, K, G, G), only valid cells count; empty masks follow `samadapt evaluate`'s rules
    (`samadapt.evaluate.metrics.overlap_scores`: an empty reference predicted empty scores 1)."""
    from samadapt.evaluate.metrics import overlap_scores

    predicted = probability > torch.as_tensor(thresholds, dtype=probability.dtype).view(1, -1, 1, 1)
    inside = valid.unsqueeze(1)
    return overlap_scores(predicted & inside, targets & inside)["dice"].double().numpy()


def probe(features: dict[str, torch.Tensor], grids: dict, seed: int = 0) -> dict:
    """Train on features["train"], pick thresholds on "val", score "test". `features[part]` is
    (N, D, G, G); `grids[part]` = (targets, valid). Returns thresholds, val and test Dice per class,
    and the per-image test Dice averaged over classes."""
    targets, valid = grids["train"]
    predict = fit_probe(_rows(features["train"], valid), _rows(targets, valid), seed=seed)

    def probabilities(part):
        f = features[part]
        return predict(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])).reshape(
            f.shape[0], f.shape[2], f.shape[3], -1).permute(0, 3, 1, 2)

    val_p, test_p = probabilities("val"), probabilities("test")
    n_classes = val_p.shape[1]
    scores = np.stack([image_dice(val_p, *grids["val"], [t] * n_classes).mean(0) for t in THRESHOLDS])  # (T, K)
    thresholds = THRESHOLDS[scores.argmax(0)]
    test = image_dice(test_p, *grids["test"], thresholds)
    return {"thresholds": thresholds.tolist(), "val_dice": scores.max(0).tolist(), "test_dice": test.mean(0).tolist(),
            "test_per_image": test.mean(1).tolist()}


def measure(data: Path, splits: Path, inits: list[str], model_name: str, image_size: int, seed: int = 0) -> dict:
    from samadapt.finetune.init import build_base

    parts, classes = load_parts(data, splits, image_size)
    grids = {part: to_grid(labels, valid, len(classes)) for part, (_, labels, valid, _) in parts.items()}
    rows = [{"encoder": "pixels (no network)", "features": "pixels",
             **probe({p: pixel_features(v[0]) for p, v in parts.items()}, grids, seed)}]
    for init in inits:
        torch.manual_seed(seed)  # the random draw of `--init random`, and of the neck an MAE run keeps
        model = build_base(model_name, image_size, init, classes).base.eval()
        features = {part: encoder_features(model, values[0]) for part, values in parts.items()}
        for name, keys in FEATURE_SETS.items():
            chosen = {part: torch.cat([f[k] for k in keys], 1) for part, f in features.items()}
            rows.append({"encoder": init, "features": name, **probe(chosen, grids, seed)})
    return {"classes": classes, "cases": {p: len(v[3]) for p, v in parts.items()},
            "test_cases": parts["test"][3], "rows": rows, "differences": differences(rows, inits)}


def differences(rows: list[dict], inits: list[str]) -> list[dict]:
    """Each later encoder minus the first, per feature set, paired over test images."""
    from samadapt.evaluate.compare import paired_statistics

    by_key = {(r["encoder"], r["features"]): r for r in rows}
    out = []
    for init in inits[1:]:
        for name in FEATURE_SETS:
            stats = paired_statistics(np.array(by_key[(inits[0], name)]["test_per_image"]),
                                      np.array(by_key[(init, name)]["test_per_image"]), n_resamples=2000)
            out.append({"encoder": init, "baseline": inits[0], "features": name, **stats})
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset description (samadapt data init)")
    parser.add_argument("--splits", type=Path, required=True, help="splits.json (fold 0's train/val, and test)")
    parser.add_argument("--init", nargs="+", default=["random"], help="encoders, as finetune --init; the first is the baseline")
    parser.add_argument("--model", default="sam2-hiera-tiny")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--name", default="linear_probe")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure(args.data, args.splits, args.init, args.model, args.image_size, args.seed)
    print_table(f"linear probes, test Dice per class ({', '.join(result['classes'])}), {result['cases']}",
                [{"encoder": r["encoder"], "features": r["features"], "val": float(np.mean(r["val_dice"])),
                  "test": float(np.mean(r["test_dice"]))} for r in result["rows"]])
    print_table("paired over test images (other - baseline)",
                [{k: d[k] for k in ("encoder", "features", "mean_difference", "ci_low", "ci_high")}
                 for d in result["differences"]])
    write_result(args.name, {"data": str(args.data), "splits": str(args.splits), "model": args.model,
                             "image_size": args.image_size, "seed": args.seed, **result})
    return result


if __name__ == "__main__":
    main()
