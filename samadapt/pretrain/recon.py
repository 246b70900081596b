"""Reconstruction pictures during pre-training: original / masked input / reconstruction.

The same few images and the same masks every time (own random generator, so the training RNG and
hence an exact resume are untouched), written to RUN_DIR/recon/epoch-XXXX.png every `every` epochs
and after the last epoch. Pixels are shown un-normalised (ImageNet mean/std undone); predictions are
mapped back from norm-pix with the true patches' mean and std.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from samadapt.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from samadapt.engine.callbacks import Callback
from samadapt.modeling.masking import MASK_UNIT_PIXELS, random_unit_mask, unit_mask_to_pixels


def to_display(pixels: torch.Tensor) -> np.ndarray:
    """(3, H, W) ImageNet-normalised -> (H, W, 3) uint8."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=pixels.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=pixels.dtype).view(3, 1, 1)
    image = (pixels.detach().float().cpu() * std + mean).clamp(0, 1)
    return (image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


@torch.no_grad()
def reconstruction_panel(mae, pixels: torch.Tensor, mask: torch.Tensor, path: str) -> np.ndarray:
    """One row per image: original | masked input (masked units grey) | reconstruction with the
    visible units pasted back. Returns (rows * H, 3 * W, 3) uint8."""
    grid = (pixels.shape[-2] // MASK_UNIT_PIXELS, pixels.shape[-1] // MASK_UNIT_PIXELS)
    was_training = mae.training
    mae.eval()
    try:
        out = mae(pixels, mask, path)
        recon = mae.reconstruct(pixels, out.pred, mask)
    finally:
        mae.train(was_training)
    hidden = unit_mask_to_pixels(mask, grid).to(pixels.device)
    masked_input = pixels.masked_fill(hidden, 0.0)  # 0 = the ImageNet mean: mid grey
    rows = [np.concatenate([to_display(a), to_display(b), to_display(c)], axis=1)
            for a, b, c in zip(pixels, masked_input, recon)]
    return np.concatenate(rows, axis=0)


class ReconstructionPictures(Callback):
    def __init__(self, dataset, grid: tuple[int, int], path: str, out_dir: str | Path, every: int,
                 n_images: int = 3, seed: int = 0, mask_ratio: float = 0.75):
        self.dataset, self.grid, self.path, self.out_dir, self.every = dataset, grid, path, Path(out_dir), every
        self.indices = list(range(min(n_images, len(dataset))))
        self.mask = random_unit_mask(len(self.indices), grid, mask_ratio, torch.Generator().manual_seed(seed))
        self._last_written_epoch: int | None = None

    def write(self, trainer, epoch: int) -> Path | None:
        if not trainer.is_main or not self.indices:
            return None
        from PIL import Image

        from samadapt.engine.atomic import atomic_file
        from samadapt.engine.distributed import unwrap

        mae = unwrap(trainer.model)
        device = next(mae.parameters()).device
        pixels = torch.stack([self.dataset[i]["image"] for i in self.indices]).to(device)
        panel = reconstruction_panel(mae, pixels, self.mask.to(device), self.path)
        target = self.out_dir / f"epoch-{epoch:04d}.png"
        with atomic_file(target) as handle:
            Image.fromarray(panel).save(handle, format="PNG")
        self._last_written_epoch = epoch
        return target

    def on_epoch_end(self, trainer, epoch: int, metrics) -> None:
        if self.every and (epoch + 1) % self.every == 0:
            self.write(trainer, epoch + 1)

    def on_fit_end(self, trainer, summary) -> None:
        if self.every and self._last_written_epoch != trainer.epoch and trainer.epoch > 0:
            self.write(trainer, trainer.epoch)
