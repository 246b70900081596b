"""Fine-tuning step time in fp32 vs bf16 autocast (`samadapt finetune --precision bf16`).

One whole-model step of the class-prompt SAM2 model (forward, Dice + BCE at input resolution, the
presence term, backward, AdamW), the same batch and weights in both precisions, rounds interleaved
so that a change in machine load hits both alike. bf16 pays off only on CPUs with bf16 matrix
units (AVX-512 BF16, AMX); elsewhere it is emulated and slower, which this benchmark shows too.
"""

from __future__ import annotations

import statistics
import time

from benchmarks.common import matmul_gflops, write_result


def run(quick: bool = True) -> dict:
    """Hiera-T at 256 px with --quick; otherwise 256 and 512 px."""
    sizes = [256] if quick else [256, 512]
    rows = [measure(size, rounds=2 if quick else 4) for size in sizes]
    print(f"{'size':>6} {'fp32 step':>11} {'bf16 step':>11} {'speed-up':>9}")
    for r in rows:
        print(f"{r['image_size']:>6} {r['fp32_step_s']:>10.3f}s {r['bf16_step_s']:>10.3f}s {r['speedup']:>8.2f}x")
    from samadapt.modeling.fast.encoder import native_bf16_cpu

    result = {"rows": rows, "native_bf16_cpu": native_bf16_cpu()}
    write_result("train_precision", result)
    return result


def measure(size: int, rounds: int, batch: int = 4, steps: int = 3) -> dict:
    import torch
    import torch.nn.functional as F

    from samadapt.finetune.init import build_base
    from samadapt.finetune.losses import parse_loss
    from samadapt.modeling.class_prompts import ClassPromptSegmenter

    torch.manual_seed(0)
    model = ClassPromptSegmenter(build_base("sam2-hiera-tiny", size, "random", ["lesion"]).base, ["lesion"],
                                 presence=True)
    model.configure_trainable("all")
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    loss_fn = parse_loss("dice+bce")
    images = torch.randn(batch, 3, size, size)
    target = (torch.rand(batch, 1, size, size) > 0.95).float()

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, presence = model(images, return_presence=True)
        logits = F.interpolate(logits.float(), size=(size, size), mode="bilinear", align_corners=False)
        loss = loss_fn(logits, target) + F.binary_cross_entropy_with_logits(presence.float(), torch.ones_like(presence.float()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    times: dict[bool, list[float]] = {False: [], True: []}
    for bf16 in (False, True):
        step(bf16)  # warm-up: oneDNN builds its kernels on first use
    for _ in range(rounds):
        for bf16 in (False, True):
            start = time.perf_counter()
            for _ in range(steps):
                step(bf16)
            times[bf16].append((time.perf_counter() - start) / steps)
    fp32, bf16 = statistics.median(times[False]), statistics.median(times[True])
    return {"model": "sam2-hiera-tiny", "image_size": size, "batch": batch, "fp32_step_s": round(fp32, 4),
            "bf16_step_s": round(bf16, 4), "speedup": round(fp32 / bf16, 2),
            "matmul_gflops_fp32": round(matmul_gflops(), 1)}


if __name__ == "__main__":
    run(quick=True)
