"""Fast SAM2 encoder against Meta's implementation, same weights, same inputs, one process.

Per size: Meta's `forward_image` (the test-only `sam2` package, random weights), samadapt's plain
`encode` and the fast path (weights loaded from Meta's state dict through `samadapt.modeling.loading`)
are timed in interleaved rounds (A, B, C, A, B, C, ...) after warm-up, so a load change on the
shared machine hits all of them alike. Reported: medians, the Meta/fast ratio (median of per-round
ratios), GFLOP/s as a fraction of the fp32 matmul throughput measured in the same run, the largest
relative error against Meta's decoder inputs, the opt-in bf16 fast path (speed and error) next to
the fp32 ceiling (Meta's time over the time of all FLOPs at the measured matmul peak), the encoder
exported as `samadapt export` writes it run in onnxruntime in fp32 and with `--quantize int8` (speed,
feature error, and the IoU of box-prompted masks decoded from each path's features against those from
the fp32 plain path), the same comparison on one thread by CPU time (steady
when other jobs share the machine), peak RSS, machine load, where the time goes
(torch.profiler, grouped), the few-shot decoder's per-image time and the `predict` pipeline
(read -> preprocess -> encode -> decode -> resize -> write) with and without the fast path.

    python -m benchmarks.run fast_encoder            # 1024 and 512 px
    python -m benchmarks.run fast_encoder --quick    # 512 px, fewer rounds
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import matmul_gflops, peak_rss_mb, print_table, write_result

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
MODEL = "sam2.1-hiera-tiny"
GROUPS = {  # profiler op name fragments -> what they are
    "matmul": ("addmm", "aten::mm", "linear_pointwise", "aten::bmm", "mkl_linear"),
    "attention": ("scaled_dot_product", "_softmax"),
    "copies/layout": ("copy_", "contiguous", "aten::cat", "constant_pad", "fill_", "clone"),
    "gelu": ("gelu",),
    "layer norm": ("layer_norm",),
    "add/mul": ("aten::add", "aten::mul"),
    "pooling": ("max_pool", "amax"),
    "convolution": ("convolution",),
}


def _randomise(module: torch.nn.Module, seed: int = 0, std: float = 0.05) -> None:
    """Seeded noise in every parameter and float buffer (zero-initialised ones too)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]:
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * std)


def _meta_features(meta, pixels: torch.Tensor) -> list[torch.Tensor]:
    """Meta's decoder inputs [(B,256,S/16,S/16) + no_mem_embed, (B,32,S/4,S/4), (B,64,S/8,S/8)]."""
    out = meta.forward_image(pixels)
    _, feats, _, sizes = meta._prepare_backbone_features(out)
    feats[-1] = feats[-1] + meta.no_mem_embed
    b = pixels.shape[0]
    s4, s8, s16 = (f.permute(1, 2, 0).reshape(b, -1, *s) for f, s in zip(feats, sizes))
    return [s16, s4, s8]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _attention_flops(fn) -> float:
    """FLOPs of scaled-dot-product attention during fn() (torch's flop counter skips the CPU kernel)."""
    total = 0.0

    class Count(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            nonlocal total
            if func is torch.nn.functional.scaled_dot_product_attention:
                q, k = args[0], args[1]
                total += 4.0 * q.shape[:-2].numel() * q.shape[-2] * k.shape[-2] * q.shape[-1]
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return total


def _profile(fn) -> dict:
    """Self CPU seconds of one call, grouped (see GROUPS), plus the share of each group."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    groups: dict[str, float] = {}
    for event in prof.key_averages():
        name = event.key
        group = next((g for g, keys in GROUPS.items() if any(k in name for k in keys)), "other")
        groups[group] = groups.get(group, 0.0) + event.self_cpu_time_total / 1e6
    total = sum(groups.values()) or 1.0
    return {g: {"s": round(s, 4), "share": round(s / total, 3)} for g, s in sorted(groups.items(), key=lambda kv: -kv[1])}


def _single_thread_cpu_seconds(runs: dict, rounds: int) -> dict[str, float]:
    """Median CPU seconds of each run on one thread (interleaved, after warm-up).

    With one thread all work happens on the calling thread, so its CPU time counts the work done
    and not the time spent waiting for a core: on a machine shared with other jobs this is the
    steadier comparison (wall-clock with 2 threads also pays for every thread preempted at a
    parallel region's barrier)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for fn in runs.values():
            fn()
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(rounds):
            for name, fn in runs.items():
                start = time.thread_time()
                fn()
                times[name].append(time.thread_time() - start)
    finally:
        torch.set_num_threads(threads)
    return {k: statistics.median(v) for k, v in times.items()}


def matmul_gflops_per_cpu_second(n: int = 2048, repeats: int = 5) -> float:
    """fp32 matmul GFLOP per CPU-second on one thread: the single-thread yardstick."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        times = []
        for _ in range(repeats):
            start = time.thread_time()
            a @ b
            times.append(time.thread_time() - start)
    finally:
        torch.set_num_threads(threads)
    return 2 * n**3 / statistics.median(times) / 1e9


def _onnx_encoders(model, size: int, folder: Path, threads: int) -> dict:
    """name -> onnxruntime session of `model`'s encoder as `samadapt export` writes it: fp32, and
    int8 (`export --quantize int8`); `threads` intra-op threads (1: all work on the calling thread)."""
    import onnxruntime as ort

    from samadapt.export.onnx_export import EncoderGraph, export_graph, feature_names, quantize_encoder

    fp32, int8 = folder / f"encoder_{size}.onnx", folder / f"encoder_{size}_int8.onnx"
    if not fp32.is_file():
        export_graph(EncoderGraph(model), (torch.zeros(1, 3, size, size),), fp32, ["pixel_values"],
                feature_names(model.family))
        quantize_encoder(fp32, int8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for name, path in (("ort_fp32", fp32), ("ort_int8", int8))}


def _box_mask_iou(model, features, reference) -> float:
    """IoU of the box-prompted masks (logit > 0) decoded from `features` against those decoded
    from `reference` (both tuples in `ImageFeatures` order), one box over the central half."""
    from samadapt.modeling.segment_anything import ImageFeatures

    size = model.image_size
    boxes = torch.tensor([[[size / 4, size / 4, 3 * size / 4, 3 * size / 4]]])
    masks = [model.decode(ImageFeatures(f[0], tuple(f[1:])), boxes=boxes).logits > 0 for f in (features, reference)]
    union = (masks[0] | masks[1]).sum()
    return float((masks[0] & masks[1]).sum() / union) if union else 1.0


def measure_size(size: int, rounds: int) -> dict:
    from sam2.build_sam import build_sam2
    from torch.utils.flop_counter import FlopCounterMode

    from samadapt.modeling.fast import accelerate
    from samadapt.modeling.loading import load_model

    meta = build_sam2(CONFIG, None, device="cpu", hydra_overrides_extra=[f"++model.image_size={size}"])
    _randomise(meta)
    meta.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "meta.pt"
        torch.save({"model": meta.state_dict()}, path)
        plain = load_model(MODEL, weights=path, image_size=size).eval()
        fast = accelerate(load_model(MODEL, weights=path, image_size=size).eval(), compile=False)
        bf16 = accelerate(load_model(MODEL, weights=path, image_size=size).eval(), compile=False, precision="bf16")
    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    onnx_dir = Path(tempfile.mkdtemp(prefix="fast_encoder_onnx."))
    sessions = _onnx_encoders(plain, size, onnx_dir, torch.get_num_threads())
    feed = {"pixel_values": pixels.numpy()}
    runs = {
        "meta": lambda: _meta_features(meta, pixels),
        "plain": lambda: plain.encode(pixels),
        "fast": lambda: fast.encode(pixels),
        "fast_bf16": lambda: bf16.encode(pixels),
        **{name: (lambda s=session: s.run(None, feed)) for name, session in sessions.items()},
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    load_before = os.getloadavg()
    with torch.inference_mode():
        reference = runs["meta"]()
        outputs = {name: runs[name]() for name in ("plain", "fast", "fast_bf16")}  # also the warm-up
        outputs = {name: (f.embedding, *f.high_res) for name, f in outputs.items()}
        outputs.update({name: tuple(torch.from_numpy(a) for a in runs[name]()) for name in sessions})
        errors = {name: max(_rel(a, b) for a, b in zip(f, reference)) for name, f in outputs.items()}
        # what users see: masks decoded from each path's features against those from the fp32 plain path
        mask_iou = {name: _box_mask_iou(plain, f, outputs["plain"]) for name, f in outputs.items() if name != "plain"}
        for _ in range(rounds):
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        single_sessions = _onnx_encoders(plain, size, onnx_dir, 1)
        single_runs = {**runs, **{name: (lambda s=session: s.run(None, feed)) for name, session in single_sessions.items()}}
        single = _single_thread_cpu_seconds(single_runs, max(3, rounds // 2))
        counter = FlopCounterMode(display=False)
        with counter:
            plain.encode(pixels)
        counted = counter.get_total_flops()
        attention = _attention_flops(lambda: plain.encode(pixels))
        profiles = {"plain": _profile(runs["plain"]), "fast": _profile(runs["fast"])}
    load_after = os.getloadavg()
    median = {k: statistics.median(v) for k, v in times.items()}
    per_round = [m / f for m, f in zip(times["meta"], times["fast"])]
    return {
        "size": size,
        "rounds": rounds,
        "single_thread_cpu_seconds": single,
        "meta_over_fast_single_thread": single["meta"] / single["fast"],
        "seconds": median,
        "seconds_all": times,
        "meta_over_fast": statistics.median(per_round),
        "meta_over_fast_per_round": per_round,
        "plain_over_fast": statistics.median(p / f for p, f in zip(times["plain"], times["fast"])),
        "meta_over_fast_bf16": statistics.median(m / f for m, f in zip(times["meta"], times["fast_bf16"])),
        **{f"meta_over_{name}": statistics.median(m / o for m, o in zip(times["meta"], times[name])) for name in sessions},
        "box_mask_iou_vs_plain_fp32": mask_iou,
        "gflop_counted": counted / 1e9,  # torch.utils.flop_counter: matmuls + convolutions
        "gflop_attention": attention / 1e9,  # not seen by the flop counter on CPU
        "max_rel_error_vs_meta": errors,
        "profile": profiles,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "peak_rss_mb": peak_rss_mb(),
    }


def decoder_and_predict(size: int, rounds: int) -> dict:
    """Few-shot decoder per image (3 class queries, cached-feature input) and the predict pipeline."""
    import numpy as np
    from PIL import Image

    from samadapt.modeling.prototypes import PrototypePrompter
    from samadapt.modeling.fewshot_segmenter import FewShotSegmenter
    from samadapt.inference.predict import Prompt, run_predict
    from samadapt.modeling.fast import accelerate
    from samadapt.modeling.registry import build_model

    torch.manual_seed(0)
    model = build_model(MODEL, size).eval()
    pixels = torch.randn(1, 3, size, size)
    result: dict = {"size": size}
    with torch.inference_mode():
        features = model.encode(pixels)
        segmenter = FewShotSegmenter(model, PrototypePrompter(model.feature_dim)).eval()
        classes = 3
        prototypes = _random_prototypes(classes, model.feature_dim)
        segmenter(features, prototypes)
        times = []
        for _ in range(max(rounds, 5)):
            start = time.perf_counter()
            segmenter(features, prototypes)
            times.append(time.perf_counter() - start)
    result["fewshot_decoder_s_per_image"] = statistics.median(times)
    result["fewshot_classes"] = classes
    with tempfile.TemporaryDirectory() as tmp:
        image = (np.random.default_rng(0).random((size, size)) * 255).astype(np.uint8)
        path = Path(tmp) / "image.png"
        Image.fromarray(image).save(path)
        stages = {}
        for label in ("plain", "fast"):
            net = accelerate(build_model(MODEL, size).eval(), compile=False) if label == "fast" else model
            run_predict(net, [path], Path(tmp) / "warm", Prompt(), progress=False)
            runs = [run_predict(net, [path], Path(tmp) / f"o{i}", Prompt(), progress=False)["seconds"] for i in range(rounds)]
            stages[label] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            stages[label]["total"] = statistics.median(sum(r.values()) for r in runs)
    result["predict_seconds"] = stages
    return result


def _random_prototypes(classes: int, dim: int, per_class: int = 4):
    """Prototype tokens as a trained run holds them: (C, P, D) foreground, (P, D) background."""
    from samadapt.modeling.prototypes import SupportPrototypes

    generator = torch.Generator().manual_seed(2)
    return SupportPrototypes(torch.randn(classes, per_class, dim, generator=generator),
                             torch.randn(per_class, dim, generator=generator))


def run(quick: bool = False) -> dict:
    sizes = [512] if quick else [1024, 512]
    rounds = 3 if quick else 7
    matmul_before = matmul_gflops()
    matmul_single = matmul_gflops_per_cpu_second()
    matmul_bf16 = matmul_gflops(dtype=torch.bfloat16)
    rows = [measure_size(size, rounds) for size in sizes]
    extra = [decoder_and_predict(size, rounds) for size in sizes]
    matmul_after = matmul_gflops()
    matmul = max(matmul_before, matmul_after)
    table = []
    for row in rows:
        total = row["gflop_counted"] + row["gflop_attention"]
        for name in ("meta", "plain", "fast"):
            row[f"{name}_fraction_of_matmul"] = row["gflop_counted"] / row["seconds"][name] / matmul
            row[f"{name}_fraction_of_matmul_incl_attention"] = total / row["seconds"][name] / matmul
            cpu = row["single_thread_cpu_seconds"][name]
            row[f"{name}_single_thread_fraction_of_matmul"] = row["gflop_counted"] / cpu / matmul_single
            row[f"{name}_single_thread_fraction_of_matmul_incl_attention"] = total / cpu / matmul_single
        table.append({
            "size": row["size"], "meta_s": row["seconds"]["meta"], "plain_s": row["seconds"]["plain"],
            "fast_s": row["seconds"]["fast"], "meta/fast": row["meta_over_fast"],
            "fast_matmul_frac": row["fast_fraction_of_matmul"],
            "incl_attn": row["fast_fraction_of_matmul_incl_attention"],
            "max_rel_err": row["max_rel_error_vs_meta"]["fast"], "peak_rss_mb": row["peak_rss_mb"],
            "load": row["loadavg_after"][0],
            "1thr_meta_cpu_s": row["single_thread_cpu_seconds"]["meta"],
            "1thr_fast_cpu_s": row["single_thread_cpu_seconds"]["fast"],
            "1thr_meta/fast": row["meta_over_fast_single_thread"],
            "1thr_matmul_frac": row["fast_single_thread_fraction_of_matmul"],
            # the best any exact fp32 encoder could do here: every FLOP at the matmul peak
            "fp32_ceiling": row["seconds"]["meta"] / (total / matmul),
            "bf16_s": row["seconds"]["fast_bf16"], "meta/bf16": row["meta_over_fast_bf16"],
            "bf16_err": row["max_rel_error_vs_meta"]["fast_bf16"],
            "bf16_mask_iou": row["box_mask_iou_vs_plain_fp32"]["fast_bf16"],
            **{key: value for name in ("ort_fp32", "ort_int8") for key, value in (
                (f"{name}_s", row["seconds"][name]), (f"meta/{name}", row[f"meta_over_{name}"]),
                (f"1thr_meta/{name}", row["single_thread_cpu_seconds"]["meta"] / row["single_thread_cpu_seconds"][name]),
                (f"{name}_err", row["max_rel_error_vs_meta"][name]),
                (f"{name}_mask_iou", row["box_mask_iou_vs_plain_fp32"][name]))},
        })
        row["meta_over_ideal_fp32"] = table[-1]["fp32_ceiling"]
    print_table(f"{MODEL} encoder: Meta vs samadapt fast path (fp32 matmul {matmul:.0f} GFLOP/s, "
                f"before {matmul_before:.0f} / after {matmul_after:.0f}; one thread {matmul_single:.0f} "
                f"GFLOP per CPU-second; bf16 matmul {matmul_bf16:.0f} GFLOP/s)", table)
    for row in rows:
        print(f"profile {row['size']} px (share of self CPU time):")
        for name in ("plain", "fast"):
            print(f"  {name:5s} " + ", ".join(f"{g} {v['share']:.0%}" for g, v in row["profile"][name].items()))
    for item in extra:
        print(f"{item['size']} px: few-shot decoder {item['fewshot_decoder_s_per_image'] * 1000:.0f} ms/image "
              f"({item['fewshot_classes']} classes); predict per image " + ", ".join(
                  f"{k} {v['total']:.2f}s (encode {v['encode']:.2f}s)" for k, v in item["predict_seconds"].items()))
    first = next((r for r in rows if r["size"] == 1024), rows[0])
    targets = {
        f"meta/fast>=2.0@{first['size']}": first["meta_over_fast"] >= 2.0,
        "fast>=80%_of_matmul": first["fast_fraction_of_matmul"] >= 0.8,
        "rel_error<=1e-4": all(r["max_rel_error_vs_meta"]["fast"] <= 1e-4 for r in rows),
    }
    targets["meta/fast>=2.0_single_thread_cpu"] = first["meta_over_fast_single_thread"] >= 2.0
    targets["meta/fast_bf16>=2.0 (error ~1e-2, opt-in)"] = first["meta_over_fast_bf16"] >= 2.0
    targets["meta/ort_int8>=2.0 (opt-in)"] = first["meta_over_ort_int8"] >= 2.0
    # random weights: the masks of a trained model (FFA/JSRT frames) are the real test, not run here
    targets["ort_int8_box_mask_iou>=0.99 (random weights)"] = first["box_mask_iou_vs_plain_fp32"]["ort_int8"] >= 0.99
    result = {"model": MODEL, "matmul_gflops": matmul, "matmul_gflops_bf16": matmul_bf16, "matmul_gflops_single_thread_cpu": matmul_single, "matmul_gflops_before": matmul_before,
              "matmul_gflops_after": matmul_after, "rows": rows, "decoder_and_predict": extra,
              "targets_met": targets}
    path = write_result("fast_encoder", result)
    print(f"targets: {targets}\nwrote {path}")
    return result


if __name__ == "__main__":
    import sys

    run("--quick" in sys.argv)
