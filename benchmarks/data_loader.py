"""Data loader throughput: images/s at 512 px with augmentation through a 2-worker DataLoader,
against the training step rate of SAM2 Hiera-T at the same size measured in the same run (target:
loader >= 10x the images/s that training consumes, so loading never limits training).

Run `python -m benchmarks.data_loader [--quick]`; writes benchmarks/results/data_loader.json and
prints a table. `run(quick)` is the entry point for the benchmark runner.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_table, write_result


def _throughput(dataset, workers: int, batch_size: int, batches: int) -> float:
    import torch

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         persistent_workers=False, generator=torch.Generator().manual_seed(0))
    iterator = iter(loader)
    next(iterator)  # worker start-up and first decode are not throughput
    start = time.perf_counter()
    seen = 0
    for _ in range(batches):
        try:
            seen += len(next(iterator)["case_id"])
        except StopIteration:
            break
    return seen / (time.perf_counter() - start)


def _training_images_per_s(size: int, batch_size: int, repeats: int) -> float:
    """Images/s of full SAM2 Hiera-T training steps (forward, backward, AdamW) at `size` px."""
    import torch

    from benchmarks.common import median_seconds
    from samadapt.modeling.registry import build_model

    torch.manual_seed(0)
    model = build_model("sam2-hiera-tiny", image_size=size).train()
    prompt = torch.nn.Parameter(torch.zeros(1, 1, 1, 256))
    optimizer = torch.optim.AdamW([*model.parameters(), prompt], lr=1e-5)
    pixels = torch.randn(batch_size, 3, size, size)
    target = (torch.rand(batch_size, 1, size // 4, size // 4) > 0.9).float()

    def step():
        features = model.encode(pixels)
        logits = model.decode(features, prompt_tokens=prompt.expand(batch_size, -1, -1, -1)).logits[:, :, 0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    seconds, _ = median_seconds(step, repeats=repeats, warmup=1)
    return batch_size / seconds


def run(quick: bool = True) -> dict:
    import torch

    from samadapt.data.augment import build_augmentation
    from samadapt.data.dataset import load_dataset
    from samadapt.data.phantoms import generate_phantoms
    from samadapt.data.torch_datasets import SegmentationDataset

    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the loader's main process; its workers do the decoding
    size = 512
    n_images = 24 if quick else 120
    batches = 4 if quick else 20
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate_phantoms(Path(tmp) / "fa", n=n_images, size=size, seed=0)
        generation = time.perf_counter() - start
        dataset = load_dataset(Path(tmp) / "fa")
        rows = []
        for workers, augment in [(0, False), (0, True), (2, True)]:
            items = SegmentationDataset(dataset, size, augment=build_augmentation(0) if augment else None)
            rate = _throughput(items, workers, batch_size=4, batches=batches)
            rows.append({"workers": workers, "augment": augment, "images_per_s": round(rate, 2)})
    torch.set_num_threads(default_threads)  # training gets the whole machine
    train_rate = _training_images_per_s(size, batch_size=2, repeats=2 if quick else 3)
    augmented = next(r for r in rows if r["workers"] == 2 and r["augment"])["images_per_s"]
    result = {
        "quick": quick, "image_size": size, "batch_size": 4,
        "phantom_generation_s_per_image": round(generation / n_images, 4), "loader": rows,
        "training_images_per_s": round(train_rate, 3),
        "loader_over_training": round(augmented / train_rate, 1),
        "target_met": augmented / train_rate >= 10,
    }
    path = write_result("data_loader", result)
    print_table(f"data loader at {size} px (phantom generation {1000 * generation / n_images:.0f} ms/image)", rows)
    print(f"training (Hiera-T, {size} px, batch 2, forward+backward+AdamW): {train_rate:.2f} images/s; "
          f"loader with augmentation and 2 workers is {result['loader_over_training']}x that (target >= 10x)")
    print(f"wrote {path}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run (a few seconds)")
    run(quick=parser.parse_args().quick)


if __name__ == "__main__":
    main()
