"""Data loader throughput: images/s at 512 px with augmentation through a 2-worker DataLoader.

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


def run(quick: bool = True) -> dict:
    import torch

    from samadapt.data.augment import build_augmentation
    from samadapt.data.dataset import load_dataset
    from samadapt.data.phantoms import generate_phantoms
    from samadapt.data.torch_datasets import SegmentationDataset

    torch.set_num_threads(1)
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
    result = {
        "quick": quick, "image_size": size, "batch_size": 4,
        "phantom_generation_s_per_image": round(generation / n_images, 4), "loader": rows,
    }
    path = write_result("data_loader", result)
    print_table(f"data loader at {size} px (phantom generation {1000 * generation / n_images:.0f} ms/image)", rows)
    print(f"wrote {path}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run (a few seconds)")
    run(quick=parser.parse_args().quick)


if __name__ == "__main__":
    main()
