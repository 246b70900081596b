"""The sparse path against the dense trunk: the equivalences stated in samadapt/modeling/sparse_hiera.py."""

from __future__ import annotations

import pytest
import torch

from samadapt.modeling.masking import random_unit_mask, unit_grid, visible_units
from samadapt.modeling.sparse_hiera import (
    dense_trunk_forward,
    gather_units,
    grid_to_units,
    sparse_trunk_forward,
    units_to_grid,
)
from .conftest import make_trunk
from .masked_reference import key_masked_trunk_forward

TOL = 1e-5


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@torch.no_grad()
def test_no_masking_reproduces_the_trunk(trunk256):
    pixels = torch.randn(2, 3, 256, 256)
    grid = unit_grid(256)
    mask = torch.zeros(2, grid[0] * grid[1], dtype=torch.bool)
    reference = trunk256(pixels).intermediate_hidden_states
    sparse = sparse_trunk_forward(trunk256, pixels, mask)
    dense = dense_trunk_forward(trunk256, pixels, mask, torch.zeros(96))
    assert len(sparse) == len(reference) == 4
    for ref, sp, dn in zip(reference, sparse, dense):
        assert _close(units_to_grid(sp, grid), ref) < TOL
        assert _close(dn, ref) < TOL


@torch.no_grad()
@pytest.mark.parametrize("size", [256, 320])  # 320: a 10x10 unit grid, partial 14-windows with padding
def test_masked_sparse_equals_dense_with_masked_keys_excluded(size):
    torch.manual_seed(1)
    trunk = make_trunk(size)
    grid = unit_grid(size)
    pixels = torch.randn(2, 3, size, size)
    mask = random_unit_mask(2, grid, 0.75, torch.Generator().manual_seed(3))
    sparse = sparse_trunk_forward(trunk, pixels, mask)
    reference = key_masked_trunk_forward(trunk, pixels, mask)
    visible = visible_units(mask)
    for sp, ref in zip(sparse, reference):
        assert _close(sp, gather_units(grid_to_units(ref, grid), visible)) < TOL


@torch.no_grad()
def test_dense_mask_token_path_matches_sparse_while_windows_equal_units(trunk256):
    pixels = torch.randn(1, 3, 256, 256)
    grid = unit_grid(256)
    mask = random_unit_mask(1, grid, 0.75, torch.Generator().manual_seed(5))
    visible = visible_units(mask)
    sparse = sparse_trunk_forward(trunk256, pixels, mask)
    dense = dense_trunk_forward(trunk256, pixels, mask, torch.randn(96))
    dense_visible = [gather_units(grid_to_units(d, grid), visible) for d in dense]
    assert _close(sparse[0], dense_visible[0]) < TOL  # stage 1: window 8 = unit
    assert _close(sparse[1], dense_visible[1]) < TOL  # stage 2: window 4 = unit
    # Stage 3 has 14-windows and global blocks where the dense path's mask tokens take part.
    assert _close(sparse[2], dense_visible[2]) > 1e-3


@torch.no_grad()
def test_masked_pixels_do_not_reach_visible_tokens(trunk256):
    grid = unit_grid(256)
    mask = random_unit_mask(1, grid, 0.75, torch.Generator().manual_seed(2))
    pixels = torch.randn(1, 3, 256, 256)
    changed = pixels.clone()
    pixel_mask = mask.view(1, 1, *grid).repeat_interleave(32, 2).repeat_interleave(32, 3)
    changed[pixel_mask.expand_as(changed)] += 5.0
    a = sparse_trunk_forward(trunk256, pixels, mask)[-1]
    b = sparse_trunk_forward(trunk256, changed, mask)[-1]
    assert _close(a, b) == 0.0


def test_sparse_path_backpropagates_into_the_trunk(trunk256):
    trunk256.zero_grad()
    pixels = torch.randn(1, 3, 256, 256)
    mask = random_unit_mask(1, unit_grid(256), 0.75, torch.Generator().manual_seed(0))
    sum(s.square().mean() for s in sparse_trunk_forward(trunk256, pixels, mask)).backward()
    grads = [p.grad for p in trunk256.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    trunk256.zero_grad()


@torch.no_grad()
def test_other_window_layouts_sam2_large_style():
    """SAM2-L's windows (8, 4, 16, 8) and another global block, on a narrow 1-2-3-2 trunk."""
    from transformers import Sam2HieraDetConfig, Sam2HieraDetModel

    torch.manual_seed(2)
    config = Sam2HieraDetConfig(
        image_size=[320, 320], hidden_size=32, embed_dim_per_stage=[32, 64, 128, 256],
        num_attention_heads_per_stage=[1, 2, 4, 8], blocks_per_stage=[1, 2, 3, 2],
        window_size_per_stage=[8, 4, 16, 8], global_attention_blocks=[4],
    )
    trunk = Sam2HieraDetModel(config).eval()
    for name, param in trunk.named_parameters():
        if name.endswith("bias") or "pos_embed" in name:
            param.normal_(std=0.5)
    grid = unit_grid(320)
    pixels = torch.randn(2, 3, 320, 320)
    none = torch.zeros(2, grid[0] * grid[1], dtype=torch.bool)
    for ref, sp in zip(trunk(pixels).intermediate_hidden_states, sparse_trunk_forward(trunk, pixels, none)):
        assert _close(units_to_grid(sp, grid), ref) < TOL
    mask = random_unit_mask(2, grid, 0.6, torch.Generator().manual_seed(4))
    visible = visible_units(mask)
    for sp, ref in zip(sparse_trunk_forward(trunk, pixels, mask), key_masked_trunk_forward(trunk, pixels, mask)):
        assert _close(sp, gather_units(grid_to_units(ref, grid), visible)) < TOL


def test_sparse_backward_is_bit_reproducible_with_threads(trunk256):
    """Two backward passes over the same masked batch give identical gradients at 2 threads: the
    padding keys must not be a repeated gather, whose gradient sums in thread order."""
    from samadapt.modeling.masking import random_unit_mask, unit_grid

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        generator = torch.Generator().manual_seed(0)
        pixels = torch.randn(8, 3, 256, 256, generator=generator)
        torch.manual_seed(0)
        mask = random_unit_mask(8, unit_grid(256), 0.75)
        grads = []
        for _ in range(2):
            trunk256.zero_grad()
            stages = sparse_trunk_forward(trunk256, pixels, mask)
            sum(stage.square().mean() for stage in stages).backward()
            grads.append({n: p.grad.clone() for n, p in trunk256.named_parameters() if p.grad is not None})
        differing = [n for n in grads[0] if not torch.equal(grads[0][n], grads[1][n])]
        assert not differing
    finally:
        trunk256.zero_grad()
        torch.set_num_threads(threads)
