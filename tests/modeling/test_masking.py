"""Mask units: exact ratio, seeding, size checks."""

from __future__ import annotations

import pytest
import torch

from samadapt.errors import UserError
from samadapt.modeling.masking import (
    check_mask_ratio,
    num_masked_units,
    random_unit_mask,
    unit_grid,
    unit_mask_to_pixels,
    visible_units,
)


@pytest.mark.parametrize("size, ratio", [(256, 0.75), (512, 0.75), (256, 0.5), (128, 0.25)])
def test_realised_ratio_equals_requested(size, ratio):
    grid = unit_grid(size)
    mask = random_unit_mask(4, grid, ratio, torch.Generator().manual_seed(0))
    assert mask.shape == (4, grid[0] * grid[1])
    assert torch.all(mask.float().mean(dim=1) == ratio)


@pytest.mark.parametrize("n_units", [5, 10, 49, 100])
@pytest.mark.parametrize("ratio", [0.6, 0.75, 0.9, 0.01])
def test_rounding_is_nearest_and_keeps_both_sides(n_units, ratio):
    masked = num_masked_units(n_units, ratio)
    assert 1 <= masked <= n_units - 1
    if 1 < ratio * n_units < n_units - 1:
        assert abs(masked / n_units - ratio) <= 1 / (2 * n_units) + 1e-12


def test_seeded_and_different_per_image():
    grid = unit_grid(256)
    a = random_unit_mask(3, grid, 0.75, torch.Generator().manual_seed(7))
    b = random_unit_mask(3, grid, 0.75, torch.Generator().manual_seed(7))
    c = random_unit_mask(3, grid, 0.75, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])


def test_visible_units_are_the_unmasked_ones_ascending():
    mask = random_unit_mask(2, (4, 4), 0.75, torch.Generator().manual_seed(1))
    vis = visible_units(mask)
    assert vis.shape == (2, 4)
    for row in range(2):
        assert vis[row].tolist() == torch.nonzero(~mask[row]).flatten().tolist()


def test_pixel_mask_covers_whole_units():
    mask = torch.zeros(1, 4, dtype=torch.bool)
    mask[0, 1] = True  # row 0, column 1 of a 2x2 grid
    pixels = unit_mask_to_pixels(mask, (2, 2))
    assert pixels.shape == (1, 1, 64, 64)
    assert pixels[0, 0, :32, 32:].all() and pixels.sum() == 32 * 32


@pytest.mark.parametrize("size", [100, 250, 16])
def test_size_not_multiple_of_unit_is_user_error(size):
    with pytest.raises(UserError, match=str(size)):
        unit_grid(size)


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_ratio_outside_open_interval_is_user_error(ratio):
    with pytest.raises(UserError, match="mask-ratio"):
        check_mask_ratio(ratio)
