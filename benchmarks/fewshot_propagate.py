"""Slice-wise few-shot vs few-shot + SAM2 propagation vs propagation from labelled slices, on the
test volumes of a split, scored in 3D by the shared evaluation (Dice, precision, recall,
false-positive slices).

    python -m benchmarks.fewshot_propagate --run RUN --data DATASET.yaml --splits SPLITS.json \
        --out OUT [--limit N] [--seed-count 3] [--support-count 3] [--key-slices 1 3]

Methods, one row each (mean over test volumes and classes):
- `fewshot`: `samadapt fewshot predict` (slice by slice), with and without --largest-component;
- `fewshot+propagate confident|support`: `fewshot predict --propagate --seed-slices ...`; and the
  confident seeds with tracking that does not stop where the object score says absent (such slices
  still come out empty; tracking goes on to the next; `--keep-tracking-too`);
- `propagate N labelled`: `samadapt propagate --labels` with N labelled slices of the test volume
  itself (N = 1: the slice with the most labelled voxels; N > 1: labelled slices at evenly spaced
  positions among the volume's labelled slices), through the same memory model.
Everything runs in one process with one memory model: the one `fewshot predict --propagate` builds
for the run. Per-volume rows go to OUT/rows.jsonl, the table to OUT/summary.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def key_slices(truth: np.ndarray, count: int) -> list[int]:
    """Slices (last axis) given as labels: the largest one, or `count` evenly spaced labelled ones."""
    area = (truth > 0).sum(axis=(0, 1))
    if count == 1:
        return [int(np.argmax(area))]
    labelled = np.flatnonzero(area)
    picks = np.round(np.linspace(0, len(labelled) - 1, count + 2)[1:-1]).astype(int)
    return sorted({int(labelled[i]) for i in picks})


def _summarise(name: str, cases: list, classes: list[str]) -> dict:
    from samadapt.evaluate.report import evaluate_cases

    result = evaluate_cases(cases, None, class_names=classes, overlays=False)
    summary = result.summary
    row = {"method": name, "volumes": summary["n_cases"], "per_case": result.rows,
           "dice": summary["mean_over_classes"]["dice"]["mean"],
           "precision": summary["mean_over_classes"]["precision"]["mean"],
           "recall": summary["mean_over_classes"]["recall"]["mean"],
           "fp_slices": summary["false_positive_slices"]}
    for cls, stats in summary["per_class"].items():
        row[f"{cls}_dice"] = stats["dice"]["mean"]
    return row


def _methods(args, run, memory, dataset_path):
    from samadapt.fewshot.config import PropagationSeeds
    from samadapt.fewshot.propagate import VolumePropagation, read_support_frames

    support = read_support_frames(run, dataset_path, args.support_count)
    return {
        "fewshot": None,
        f"fewshot+propagate confident (K={args.seed_count})":
            VolumePropagation(memory, PropagationSeeds("confident", args.seed_count)),
        f"fewshot+propagate support (K={args.support_count})":
            VolumePropagation(memory, PropagationSeeds("support", args.support_count), support),
        **({f"fewshot+propagate confident (K={args.seed_count}), keep tracking":
            VolumePropagation(memory, PropagationSeeds("confident", args.seed_count), stop_when_absent=False)}
           if args.keep_tracking_too else {}),
    }


def _redrawn_memory(run, seed: int):
    """The memory model `fewshot predict --propagate` builds for a random run, from another seed."""
    import torch

    from samadapt.modeling.sam2_video import accelerate_memory_model, build_memory_model

    identity = run.config["cache_model"]
    if identity.get("weights") is not None:
        raise SystemExit("--memory-seed applies to runs cached with random weights")
    torch.manual_seed(seed)
    memory = build_memory_model(identity["name"], int(identity["image_size"]))
    memory.hf.vision_encoder.load_state_dict(run.segmenter.sam.hf.vision_encoder.state_dict())
    return accelerate_memory_model(memory)


def _share_decoder_pass(run) -> None:
    """Run the few-shot decoder once per volume, not once per method: slice-wise prediction and the
    confident seeds read the same logits (the fast encoder gives the plain one's features within
    1e-4; `fewshot predict` itself runs the plain encoder)."""
    import samadapt.fewshot.predict as predict
    from samadapt.modeling.fast import accelerate

    accelerate(run.segmenter.sam, compile=False, announce=False)
    compute, memo = predict.restored_logits, {}

    def restored_logits(run, units, batch_size=4):
        key = (len(units), units[0].tobytes())
        if memo.get("key") != key:
            memo.update(key=key, logits=list(compute(run, units, batch_size)))
        return iter(memo["logits"])

    predict.restored_logits = restored_logits


def main() -> None:
    import torch

    from samadapt.data.dataset import load_dataset
    from samadapt.data.masks import remap_classes
    from samadapt.evaluate.report import EvaluationCase, json_ready
    from samadapt.fewshot.predict import keep_largest_components, load_fewshot_run, segment_volume
    from samadapt.fewshot.propagate import memory_model_for_run
    from samadapt.inference.propagate_volume import KeyPrompt, read_stack, segment_stack

    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--splits", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=None, help="only the first N test volumes")
    parser.add_argument("--seed-count", type=int, default=3)
    parser.add_argument("--support-count", type=int, default=3)
    parser.add_argument("--key-slices", type=int, nargs="*", default=[1, 3])
    parser.add_argument("--keep-tracking-too", action="store_true",
                        help="also the confident seeds with tracking that does not stop where the object is absent")
    parser.add_argument("--memory-seed", type=int, default=None,
                        help="random runs only: draw the memory with this seed instead of the cache's (how much the "
                             "untrained memory's draw decides)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    run = load_fewshot_run(args.run)
    memory = memory_model_for_run(run) if args.memory_seed is None else _redrawn_memory(run, args.memory_seed)
    _share_decoder_pass(run)
    methods = _methods(args, run, memory, args.data)
    dataset = load_dataset(args.data)
    test_ids = json.loads(args.splits.read_text())["test"]["cases"][: args.limit]
    cases = {c.id: c for c in dataset.cases}
    scored: dict[str, list] = {}
    rows_file = (args.out / "rows.jsonl").open("w")
    for case_id in test_ids:
        case = cases[case_id]
        image, started = case.load_image(), time.perf_counter()
        truth = remap_classes(case.load_mask(), case.class_names, run.classes)
        timings = {}
        for name, propagation in methods.items():
            t0 = time.perf_counter()
            pred = segment_volume(run, image, largest_component=False, propagation=propagation)
            timings[name] = time.perf_counter() - t0
            scored.setdefault(name, []).append(EvaluationCase(case_id, pred, truth, slice_axis=2))
            scored.setdefault(name + " + largest component", []).append(
                EvaluationCase(case_id, keep_largest_components(pred), truth, slice_axis=2))
        stack = read_stack(case.image)
        for count in args.key_slices:
            t0 = time.perf_counter()
            chosen = key_slices(truth, count)
            # what `propagate --labels` builds from a label volume holding these slices
            prompts = [KeyPrompt(int(c), z, mask=truth[:, :, z] == c) for z in chosen
                       for c in np.unique(truth[:, :, z]) if c]
            label_slices = {z: truth[:, :, z] for z in chosen}
            pred = np.moveaxis(segment_stack(memory, stack, prompts, label_slices), 0, 2)
            timings[f"propagate {count} labelled"] = time.perf_counter() - t0
            scored.setdefault(f"propagate from {count} labelled slice(s)", []).append(
                EvaluationCase(case_id, pred, truth, slice_axis=2))
        rows_file.write(json.dumps({"case": case_id, "slices": int(truth.shape[2]), "seconds": timings}) + "\n")
        rows_file.flush()
        print(f"{case_id}: {time.perf_counter() - started:.1f} s", flush=True)
    table = [_summarise(name, cases_, run.classes) for name, cases_ in scored.items()]
    (args.out / "summary.json").write_text(json.dumps(json_ready(table), indent=1) + "\n")
    def shown(value) -> str:
        return "undefined" if value is None else f"{value:.3f}"

    for row in table:
        print(f"{row['method']:<56} Dice {shown(row['dice'])}  precision {shown(row['precision'])}  "
              f"recall {shown(row['recall'])}  FP slices {row['fp_slices']}  ({row['volumes']} volumes)")


if __name__ == "__main__":
    main()
