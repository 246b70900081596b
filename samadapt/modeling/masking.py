"""Random masking of whole mask units, aligned with the windows of SAM2's Hiera trunk.

A mask unit is a 32×32-pixel square: 8×8 tokens after the stride-4 patch embedding, which is exactly
one stage-1 attention window (8) and, after one 2×2 query pooling, one stage-2 window (4). Masking
whole units (rather than single tokens) is what lets the sparse encoder drop masked units without
changing the computation seen by the visible ones (see `samadapt/modeling/sparse_hiera.py`).

Units are numbered in raster order over the unit grid: unit `i` sits at row `i // grid_w`, column
`i % grid_w`. Masks are boolean `(batch, grid_h * grid_w)` tensors, True = masked (hidden from the
encoder, to be reconstructed).

Rounding: the number of masked units is `round_half_up(ratio * n_units)`, clamped so that at least one
unit stays visible and, when `ratio > 0`, at least one unit is masked. Every image of a batch masks the
same number of units, so the realised ratio is the same for all images and equals the requested one
whenever `ratio * n_units` is an integer (e.g. 0.75 with a 256- or 512-pixel image); otherwise it is
within `1 / (2 * n_units)` of it.
"""

from __future__ import annotations

import math

import torch

from samadapt.errors import UserError
from samadapt.options import flag

MASK_UNIT_PIXELS = 32  # 8 tokens at patch stride 4 = the first stage's window of SAM2's Hiera


def check_mask_ratio(ratio: float) -> float:
    """The ratio for training: strictly between 0 and 1 (UserError otherwise)."""
    ratio = float(ratio)
    if not (0.0 < ratio < 1.0) or math.isnan(ratio):
        raise UserError(f"{flag('mask_ratio')} must be strictly between 0 and 1, got {ratio}")
    return ratio


def unit_grid(image_size: int | tuple[int, int], unit: int = MASK_UNIT_PIXELS) -> tuple[int, int]:
    """(grid_h, grid_w) of mask units for a square `image_size` or an (H, W) pair.

    Raises UserError when a side is not a positive multiple of `unit`: a partial unit would be cut by
    the trunk's windows and could not be dropped exactly.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    for side in (height, width):
        if side < unit:
            raise UserError(f"image size {side} is smaller than one mask unit ({unit} pixels)")
        if side % unit:
            raise UserError(
                f"image size {side} is not a multiple of the mask unit ({unit} pixels); "
                f"use e.g. {max(unit, side // unit * unit)} or {(side // unit + 1) * unit}"
            )
    return height // unit, width // unit


def num_masked_units(n_units: int, ratio: float) -> int:
    """How many of `n_units` units a ratio masks (rounding: see the module docstring)."""
    if not (0.0 <= ratio < 1.0):
        raise UserError(f"mask ratio must be in [0, 1), got {ratio}")
    if ratio == 0.0 or n_units < 2:
        return 0
    masked = math.floor(ratio * n_units + 0.5)
    return min(max(masked, 1), n_units - 1)


def random_unit_mask(
    batch: int, grid: tuple[int, int], ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A random mask per image by sorting uniform noise: the units with the smallest noise are masked.

    Returns:
        bool (batch, grid_h * grid_w), True = masked; every row has the same number of True entries.
    """
    n_units = grid[0] * grid[1]
    n_masked = num_masked_units(n_units, ratio)
    noise = torch.rand(batch, n_units, generator=generator)
    order = noise.argsort(dim=1)
    mask = torch.zeros(batch, n_units, dtype=torch.bool)
    mask.scatter_(1, order[:, :n_masked], True)
    return mask


def visible_units(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the visible units of each image, ascending (raster order).

    Args:
        mask: bool (batch, n_units), the same number of masked units in every row.
    Returns:
        long (batch, n_visible).
    """
    counts = (~mask).sum(dim=1)
    if not bool((counts == counts[0]).all()):
        raise ValueError("every image of a batch must mask the same number of units")
    # A stable sort of the mask puts the visible (False) units first, in their original order.
    order = mask.to(torch.uint8).argsort(dim=1, stable=True)
    return order[:, : int(counts[0])]


def unit_mask_to_pixels(mask: torch.Tensor, grid: tuple[int, int], unit: int = MASK_UNIT_PIXELS) -> torch.Tensor:
    """bool (batch, n_units) -> bool (batch, 1, grid_h * unit, grid_w * unit), True = masked pixel."""
    batch = mask.shape[0]
    grid_mask = mask.view(batch, 1, grid[0], 1, grid[1], 1).expand(-1, -1, -1, unit, -1, unit)
    return grid_mask.reshape(batch, 1, grid[0] * unit, grid[1] * unit)
