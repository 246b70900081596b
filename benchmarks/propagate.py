"""`samadapt propagate` against Meta's `SAM2VideoPredictor`: same CPU, same random weights, same
frames and prompt, same outputs.

Per size: Meta's predictor (the test-only `sam2` package, Hiera-T SAM2.1, random weights with the
object kept present so every slice is tracked) and samadapt's propagation (the weights loaded from
Meta's state dict through `samadapt.modeling.sam2_video`, fast encoder as `samadapt propagate` runs
it, in fp32 and with `--precision bf16`) segment the same N slices from a mask on the middle slice, forward then backward, in
interleaved rounds (Meta, ours, Meta, ours, ...) so that a load change on the shared machine hits
both alike. Reported: slices per CPU second (one thread: what the work costs whatever else shares
the machine) and per wall second (medians), the speed ratios (medians of per-round ratios),
and the agreement of the masks (IoU of the binarised masks and largest relative error of the
logits, per slice). Peak RSS: a 200-slice volume propagated in a subprocess each, `samadapt
propagate` on a NIfTI file end to end and Meta's predictor on the same slices in memory.

    python -m benchmarks.run propagate           # 256 and 512 px, RSS at 200 slices
    python -m benchmarks.run propagate --quick   # 256 px, one round, RSS at 50 slices
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import print_table, write_result

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
PRECISIONS = ("fp32", "bf16")  # samadapt propagate --precision
STD = 0.05
RSS_SIZE = 256


def _randomise(module: torch.nn.Module, seed: int = 0, std: float = STD) -> None:
    """Seeded noise in every parameter and float buffer (zero-initialised ones too)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]:
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * std)


def meta_predictor(size: int, seed: int = 0):
    from sam2.build_sam import build_sam2_video_predictor

    predictor = build_sam2_video_predictor(CONFIG, None, device="cpu", hydra_overrides_extra=[f"++model.image_size={size}"])
    _randomise(predictor, seed)
    with torch.no_grad():  # random weights say "absent" about as often as not: keep the object present
        predictor.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.add_(20.0)
    predictor.fill_hole_area = 0  # hole filling needs Meta's compiled CUDA extension
    return predictor.eval()


def ours_from(predictor, size: int, folder: Path, precision: str = "fp32"):
    from samadapt.modeling.sam2_video import accelerate_memory_model, load_memory_model

    checkpoint = folder / f"meta_{size}.pt"
    torch.save({"model": predictor.state_dict()}, checkpoint)
    model = load_memory_model(weights=checkpoint, image_size=size)
    return accelerate_memory_model(model, fast=True, precision=precision), checkpoint


def inputs(size: int, slices: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Frames (N, 3, S, S), a disc mask (S, S) on the key slice, the key slice (the middle one)."""
    frames = torch.randn(slices, 3, size, size, generator=torch.Generator().manual_seed(seed))
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mask = (((xx - size * 0.45) ** 2 + (yy - size * 0.5) ** 2) <= (size * 0.18) ** 2).float()
    return frames, mask, slices // 2


def run_meta(predictor, frames, mask, key) -> dict[int, torch.Tensor]:
    """Meta's logits per slice (S, S), forward then backward from the key slice."""
    import sam2.sam2_video_predictor as video_module

    size = frames.shape[-1]
    video_module.load_video_frames = lambda **_: (frames, size, size)
    with torch.inference_mode():
        state = predictor.init_state(video_path="frames")
        predictor.add_new_mask(state, frame_idx=key, obj_id=1, mask=mask.bool())
        out = {}
        for reverse in (False, True):
            for frame, _, masks in predictor.propagate_in_video(state, reverse=reverse):
                out[frame] = masks[0, 0].clone()
    return out


def run_ours(model, frames, mask, key) -> dict[int, torch.Tensor]:
    """samadapt's logits per slice, upsampled to (S, S) as `propagate_volume` restores them."""
    from samadapt.inference.propagate import FramePrompt, propagate

    size = frames.shape[-1]
    out = {}
    for result in propagate(model.hf, list(frames), [FramePrompt(1, key, mask=mask)], stop_when_absent=False):
        out[result.frame] = F.interpolate(result.logits[None, None].float(), size=(size, size), mode="bilinear",
                                          align_corners=False)[0, 0]
    return out


def agreement(ours: dict, meta: dict) -> dict:
    ious, errors = [], []
    for frame, expected in meta.items():
        got = ours[frame]
        a, b = got > 0, expected > 0
        union = int((a | b).sum())
        ious.append(1.0 if union == 0 else int((a & b).sum()) / union)
        errors.append(float((got.double() - expected.double()).norm() / expected.double().norm().clamp_min(1e-30)))
    return {"slices_compared": len(meta), "min_mask_iou": min(ious), "max_rel_error": max(errors),
            "same_slices": sorted(ours) == sorted(meta)}


def compare_speed(size: int, slices: int, rounds: int, folder: Path) -> list[dict]:
    """One row per samadapt precision (fp32: the default; bf16: `--precision bf16`), all timed in
    the same interleaved rounds against the same Meta runs."""
    predictor = meta_predictor(size)
    ours = {precision: ours_from(predictor, size, folder, precision)[0] for precision in PRECISIONS}
    frames, mask, key = inputs(size, slices)
    meta_out = run_meta(predictor, frames, mask, key)  # also the warm-up
    checks = {p: agreement(run_ours(model, frames, mask, key), meta_out) for p, model in ours.items()}
    times = {name: [] for name in ("meta", *ours)}  # (CPU seconds, wall seconds) per round
    for _ in range(rounds):
        runs = [("meta", lambda: run_meta(predictor, frames, mask, key))]
        runs += [(p, lambda model=model: run_ours(model, frames, mask, key)) for p, model in ours.items()]
        for name, fn in runs:
            cpu, wall = time.process_time(), time.perf_counter()
            fn()
            times[name].append((time.process_time() - cpu, time.perf_counter() - wall))
    # the key slice is visited by both passes in both implementations: N + 1 slice steps
    steps = slices + 1
    rows = []
    for precision in ours:
        row = {"size": size, "precision": precision, "slices": slices, "rounds": rounds}
        for clock, i in (("cpu", 0), ("wall", 1)):
            meta, mine = [t[i] for t in times["meta"]], [t[i] for t in times[precision]]
            row.update({f"meta_slices_per_{clock}_s": steps / statistics.median(meta),
                        f"ours_slices_per_{clock}_s": steps / statistics.median(mine),
                        f"speedup_{clock}": statistics.median(m / o for m, o in zip(meta, mine))})
        rows.append({**row, "meta_s": times["meta"], "ours_s": times[precision], **checks[precision]})
    return rows


# ---------------------------------------------------------------------------------- peak RSS
def _rss_child(which: str, slices: int, folder: Path) -> None:
    """In a fresh process: propagate `slices` slices, then print this process's peak RSS (MB)."""
    torch.set_num_threads(1)
    if which == "ours":
        from samadapt.cli import main

        code = main(["propagate", "--input", str(folder / "volume.nii.gz"), "--labels", str(folder / "key.nii.gz"),
                     "--out", str(folder / "seg.nii.gz"), "--init", f"sam2:{folder / f'meta_{RSS_SIZE}.pt'}",
                     "--image-size", str(RSS_SIZE), "--keep-tracking", "--threads", "1"])
        assert code == 0
    else:
        predictor = meta_predictor(RSS_SIZE)
        frames, mask, key = inputs(RSS_SIZE, slices)
        run_meta(predictor, frames, mask, key)
    print(json.dumps({"peak_rss_mb": _high_water_mb()}))


def _high_water_mb() -> float:
    """This process's peak RSS. Not getrusage's ru_maxrss: Linux carries that across fork and exec,
    so a child would report its parent's peak whenever that is higher."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _write_volume(slices: int, folder: Path) -> None:
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    data = rng.normal(size=(RSS_SIZE, RSS_SIZE, slices)).astype(np.float32)
    key = np.zeros(data.shape, np.uint8)
    key[80:150, 60:140, slices // 2] = 1
    nib.save(nib.Nifti1Image(data, np.eye(4)), folder / "volume.nii.gz")
    nib.save(nib.Nifti1Image(key, np.eye(4)), folder / "key.nii.gz")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def peak_rss(slices: int, folder: Path) -> list[dict]:
    if not (folder / f"meta_{RSS_SIZE}.pt").is_file():
        ours_from(meta_predictor(RSS_SIZE), RSS_SIZE, folder)
    _write_volume(slices, folder)
    rows = []
    for which in ("ours", "meta"):
        start, children = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run([sys.executable, "-m", "benchmarks.propagate", "--rss-child", which, str(slices),
                               str(folder)], capture_output=True, text=True, check=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        line = [s for s in done.stdout.splitlines() if s.startswith("{")][-1]
        rows.append({"impl": "samadapt propagate (CLI, NIfTI in and out)" if which == "ours"
                     else "Meta SAM2VideoPredictor (frames in memory)", "slices": slices, "size": RSS_SIZE,
                     **json.loads(line), "cpu_s": _children_cpu() - (children.ru_utime + children.ru_stime),
                     "wall_s": time.perf_counter() - start})
    return rows


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    sizes = [(256, 8, 1)] if quick else [(256, 8, 3), (512, 8, 2)]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        speed = [row for size, slices, rounds in sizes for row in compare_speed(size, slices, rounds, folder)]
        rss = peak_rss(50 if quick else 200, folder)
    load_after = os.getloadavg()
    print_table("propagation, 1 thread: slices per CPU second and per wall second (samadapt vs Meta SAM2VideoPredictor)",
                [{k: r[k] for k in ("size", "precision", "slices", "meta_slices_per_cpu_s", "ours_slices_per_cpu_s", "speedup_cpu",
                                    "speedup_wall", "min_mask_iou", "max_rel_error")} for r in speed])
    print_table("peak RSS (fresh process each)", rss)
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} CPUs)")
    result = {"speed": speed, "peak_rss": rss, "load_average": {"before": load_before, "after": load_after},
              "model": "sam2.1-hiera-tiny (random weights, std 0.05)", "prompt": "mask on the middle slice"}
    write_result("propagate", result)
    return result


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--rss-child":
        _rss_child(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
