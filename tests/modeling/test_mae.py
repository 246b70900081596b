"""Targets, loss and decoder of the masked autoencoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samadapt.modeling.mae import MaskedAutoencoder, normalise_patches, patchify, reconstruction_loss, unpatchify
from samadapt.modeling.masking import random_unit_mask, unit_grid, unit_mask_to_pixels

from shared_data import shared_subdir  # tests/shared_data.py (pytest puts tests/ on sys.path)
from .conftest import make_trunk


def test_patchify_round_trip_and_layout():
    pixels = torch.randn(2, 3, 64, 96)
    patches = patchify(pixels, 16)
    assert patches.shape == (2, 6, 4, 16 * 16 * 3)
    # unit 1 (row 0, column 1), its second patch (row 0, column 1 inside the unit), first pixel
    assert torch.equal(patches[0, 1, 1, :3], pixels[0, :, 0, 48])
    assert torch.equal(unpatchify(patches, (2, 3)), pixels)


def test_norm_pix_targets_have_zero_mean_unit_variance():
    normed, mean, std = normalise_patches(patchify(torch.rand(1, 3, 64, 64) * 5 + 2, 16))
    assert torch.allclose(normed.mean(-1), torch.zeros(()), atol=1e-5)
    assert torch.allclose(normed.var(-1, unbiased=False), torch.ones(()), atol=1e-3)


@pytest.mark.parametrize("norm_pix", [True, False])
def test_only_masked_patches_contribute(norm_pix):
    grid = unit_grid(128)
    pixels = torch.randn(2, 3, 128, 128)
    mask = random_unit_mask(2, grid, 0.75, torch.Generator().manual_seed(0))
    pred = torch.randn(2, 12, 4, 768)
    loss = reconstruction_loss(pred, pixels, mask, 16, norm_pix)
    changed = pixels + 3.0 * torch.randn_like(pixels) * (~unit_mask_to_pixels(mask, grid))
    assert torch.equal(reconstruction_loss(pred, changed, mask, 16, norm_pix), loss)
    changed_masked = pixels + 3.0 * torch.randn_like(pixels) * unit_mask_to_pixels(mask, grid)
    assert not torch.equal(reconstruction_loss(pred, changed_masked, mask, 16, norm_pix), loss)


def test_perfect_prediction_has_zero_loss():
    pixels = torch.randn(1, 3, 64, 64)
    mask = torch.tensor([[True, False, True, False]])
    target = normalise_patches(patchify(pixels, 16)[mask])[0].view(1, 2, 4, 768)
    assert float(reconstruction_loss(target, pixels, mask, 16)) < 1e-10


def test_reconstruct_puts_back_true_pixels_for_a_perfect_prediction():
    mae = MaskedAutoencoder(make_trunk(64, perturb=False))
    pixels = torch.randn(1, 3, 64, 64)
    mask = torch.tensor([[True, False, False, True]])
    pred = normalise_patches(patchify(pixels, 16)[mask])[0].view(1, 2, 4, 768)
    assert torch.allclose(mae.reconstruct(pixels, pred, mask), pixels, atol=1e-4)


def _train(images: torch.Tensor, path: str, steps: int = 8) -> list[float]:
    torch.manual_seed(0)
    mae = MaskedAutoencoder(make_trunk(images.shape[-1], perturb=False), decoder_dim=128)
    mae.train()
    optimiser = torch.optim.AdamW(mae.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    grid = unit_grid(images.shape[-1])
    fixed_mask = random_unit_mask(images.shape[0], grid, 0.75, generator)
    losses = []
    for _ in range(steps):
        loss = mae(images, fixed_mask, path).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses


def _phantoms(n: int, size: int) -> torch.Tensor:
    """Smooth blobs and lines: structured enough to be predictable from the visible units."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    images = []
    for i in range(n):
        img = torch.exp(-((xx - 0.3 * i) ** 2 + yy**2) * 4) + 0.5 * torch.sin(6 * xx + 3 * yy + i)
        images.append(img.expand(3, -1, -1))
    return torch.stack(images)


@pytest.mark.parametrize("path", ["sparse", "dense"])
def test_loss_decreases_on_phantoms(path):
    losses = _train(_phantoms(2, 128), path)
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.realdata
def test_loss_decreases_on_real_fa_frames():
    from PIL import Image

    from samadapt.data.preprocess import prepare_image

    folder = shared_subdir("ffa", "unlabeled")
    files = sorted(folder.glob("*.jpg"))[:2]
    images = torch.stack([prepare_image(np.asarray(Image.open(f)), 128)[0] for f in files])
    losses = _train(images, "sparse")
    assert losses[-1] < 0.8 * losses[0], losses
