"""Test oracle: SAM2's dense trunk in which masked tokens are excluded as attention keys.

Written independently of the sparse path (it works on the full token grid with transformers' own
window partition and an additive key mask) so that the two can be compared token by token. Masked
tokens' own outputs are meaningless here and are zeroed after every block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.models.sam2.modeling_sam2 import do_pool, window_partition, window_unpartition

from samadapt.modeling.masking import MASK_UNIT_PIXELS
from samadapt.modeling.sparse_hiera import embed_masked


def _keep_grid(mask: torch.Tensor, grid, height: int) -> torch.Tensor:
    """bool (B, n_units) masked -> bool (B, height, width) token kept, at the stride where the grid is `height` high."""
    side = height // grid[0]
    keep = (~mask).view(-1, grid[0], 1, grid[1], 1).expand(-1, -1, side, -1, side)
    return keep.reshape(mask.shape[0], grid[0] * side, grid[1] * side)


def _block_with_key_mask(block, x: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
    attn = block.attn
    residual = x
    normed = block.layer_norm1(x)
    if block.dim != block.dim_out:
        residual = do_pool(block.proj(normed), block.query_stride)
    height, width = normed.shape[1:3]
    window = block.window_size
    if window > 0:
        windows, pad_hw = window_partition(normed, window)
        # Padding positions are zeros = not dropped: SAM2 attends to them.
        dropped_w, _ = window_partition(dropped[..., None].float(), window)
    else:
        windows, dropped_w = normed, dropped[..., None].float()
    n, h, w, _ = windows.shape
    heads = attn.num_attention_heads
    q, k, v = attn.qkv(windows).reshape(n, h * w, 3, heads, -1).unbind(2)
    if block.query_stride:
        q = do_pool(q.reshape(n, h, w, -1), block.query_stride)
        h, w = q.shape[1:3]
        q = q.reshape(n, h * w, heads, -1)
    key_bias = torch.zeros(n, 1, 1, k.shape[1]).masked_fill(dropped_w.reshape(n, 1, 1, -1) > 0, float("-inf"))
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=key_bias)
    out = attn.proj(out.transpose(1, 2).reshape(n, h, w, -1))
    if window > 0:
        if block.query_stride:
            window = window // block.query_stride[0]
            height, width = residual.shape[1:3]
            pad_hw = (height + (-height) % window, width + (-width) % window)
        out = window_unpartition(out, window, pad_hw, (height, width))
    hidden = residual + out
    return hidden + block.mlp(block.layer_norm2(hidden))


@torch.no_grad()
def key_masked_trunk_forward(trunk, pixels: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Four stage outputs (B, H_i, W_i, C_i); tokens of masked units are zero."""
    grid = (pixels.shape[-2] // MASK_UNIT_PIXELS, pixels.shape[-1] // MASK_UNIT_PIXELS)
    x = embed_masked(trunk, pixels, mask, grid)
    stages = []
    for index, block in enumerate(trunk.blocks):
        keep_in = _keep_grid(mask, grid, x.shape[1])
        x = _block_with_key_mask(block, x, ~keep_in)
        keep_out = _keep_grid(mask, grid, x.shape[1])
        x = torch.where(keep_out[..., None], x, torch.zeros((), dtype=x.dtype))
        if index in trunk.stage_ends:
            stages.append(x)
    return stages
