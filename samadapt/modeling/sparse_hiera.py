"""Dense and sparse forward passes of SAM2's Hiera trunk over masked images, with the trunk's own weights.

Both paths start the same way: pixels of masked units are set to zero (so the 7×7 patch-embedding
convolution, which reaches 3 pixels past a unit's border, cannot see masked content), the image is
patch-embedded and the trunk's position embedding is added.

* Dense: the embeddings of masked units are replaced by a learned mask token and the unchanged trunk
  runs on the full token grid. Works with any attention layout; costs as much as an unmasked image.
* Sparse: masked units are dropped. Tokens are kept as `(batch, visible_units, s, s, channels)`, the
  `s×s` tokens of each visible unit at the current stride (8, 4, 2, 1 at strides 4, 8, 16, 32). Each
  block is evaluated as follows, calling the block's own submodules:
  - window size a divisor of `s` (stage 1, window 8; stage 2, window 4; first block of stage 3,
    whose 4-window is the stage-2 one): the windows lie inside units, so the block runs unchanged
    with every unit as a tiny image. Query pooling (2×2) also stays inside a unit.
  - larger windows (14 in stage 3, 14 then 7 in stage 4): a window covers `window / s` units per side,
    so the visible units are grouped by window and attend among themselves, padded to the fullest
    window with a key-padding mask.
  - global blocks: attention among all visible tokens of the image.
  SAM2's window partition pads the grid with zeros when the window does not divide it and does not
  mask the padding: those padded positions are keys whose key/value equal the qkv bias. The sparse
  path reproduces them with one extra key per window, value = the bias, logit raised by
  `log(number of padded positions)` (n identical keys weigh as one key with n times the weight).

What "the same as dense" means (tested in tests/modeling/test_sparse_hiera.py):
  1. with no masked unit, `sparse_trunk_forward` equals the trunk's own forward (all four stages);
  2. with masking, it equals a dense run in which masked tokens are excluded as attention keys
     (padding keys kept), at every visible token of every stage;
  3. up to the end of stage 2 the windows equal units, so the visible tokens of the mask-token dense
     path equal the sparse ones there; from stage 3 on, the dense path lets mask tokens take part in
     attention and the two paths differ by design.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from samadapt.modeling.masking import MASK_UNIT_PIXELS, unit_mask_to_pixels


def embed_masked(trunk: nn.Module, pixels: torch.Tensor, mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Patch embedding (masked pixels zeroed) plus position embedding.

    Args:
        pixels: (B, 3, H, W) normalised; mask: bool (B, n_units), True = masked.
    Returns:
        (B, H/4, W/4, C0) tokens, position embedding included.
    """
    pixel_mask = unit_mask_to_pixels(mask, grid).to(pixels.device)
    tokens = trunk.patch_embed(pixels.masked_fill(pixel_mask, 0.0))
    return tokens + trunk._get_pos_embed(tokens.shape[1:3])


def grid_to_units(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, gh*s, gw*s, C) -> (B, gh*gw, s, s, C), units in raster order."""
    b, height, width, c = x.shape
    s = height // grid[0]
    x = x.view(b, grid[0], s, grid[1], s, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, grid[0] * grid[1], s, s, c)


def units_to_grid(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, gh*gw, s, s, C) -> (B, gh*s, gw*s, C); inverse of `grid_to_units`."""
    b, _, s, _, c = x.shape
    x = x.view(b, grid[0], grid[1], s, s, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, grid[0] * s, grid[1] * s, c)


def gather_units(x: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """Select units: x (B, U, s, s, C), units long (B, V) -> (B, V, s, s, C)."""
    index = units.to(x.device)[:, :, None, None, None].expand(-1, -1, *x.shape[2:])
    return torch.gather(x, 1, index)


def dense_trunk_forward(
    trunk: nn.Module, pixels: torch.Tensor, mask: torch.Tensor, mask_token: torch.Tensor | None
) -> list[torch.Tensor]:
    """The dense path: masked units' tokens replaced by `mask_token` (C0,), full trunk.

    Returns the four stage outputs, each (B, H_i, W_i, C_i) at strides 4, 8, 16, 32.
    """
    grid = (pixels.shape[-2] // MASK_UNIT_PIXELS, pixels.shape[-1] // MASK_UNIT_PIXELS)
    tokens = trunk.patch_embed(pixels.masked_fill(unit_mask_to_pixels(mask, grid).to(pixels.device), 0.0))
    if mask_token is not None and bool(mask.any()):
        token_mask = mask.view(-1, grid[0], 1, grid[1], 1).to(tokens.device)
        unit_side = tokens.shape[1] // grid[0]
        token_mask = token_mask.expand(-1, -1, unit_side, -1, unit_side).reshape(tokens.shape[:3])
        tokens = torch.where(token_mask[..., None], mask_token.to(tokens.dtype), tokens)
    x = tokens + trunk._get_pos_embed(tokens.shape[1:3])
    stages = []
    for index, block in enumerate(trunk.blocks):
        x = block(x)
        if index in trunk.stage_ends:
            stages.append(x)
    return stages


@dataclass
class _WindowGroups:
    """Where each visible unit goes when visible units are packed window by window.

    `slot_unit` (N, M): for N non-empty (image, window) pairs and M slots (the fullest window's count),
    the flat index (into B*V) of the unit in each slot; `slot_valid` (N, M) marks real slots;
    `unit_slot` (B*V,) the flat slot (into N*M) of each unit; `pad_logit` (N,) the log-count of the
    zero-padding positions of the window (-inf when the window has none).
    """

    slot_unit: torch.Tensor
    slot_valid: torch.Tensor
    unit_slot: torch.Tensor
    pad_logit: torch.Tensor


def _window_groups(units: torch.Tensor, grid: tuple[int, int], unit_side: int, window: int) -> _WindowGroups:
    if window % unit_side:
        raise ValueError(f"window {window} is not a multiple of the unit side {unit_side} tokens")
    batch, n_visible = units.shape
    per_window = window // unit_side  # units per window side
    windows_h, windows_w = math.ceil(grid[0] / per_window), math.ceil(grid[1] / per_window)
    row, col = units // grid[1], units % grid[1]
    window_id = (row // per_window) * windows_w + col // per_window
    key = (torch.arange(batch, device=units.device)[:, None] * windows_h * windows_w + window_id).reshape(-1)
    sorted_key, order = torch.sort(key, stable=True)
    group_key, counts = torch.unique_consecutive(sorted_key, return_counts=True)
    n_groups, slots = group_key.numel(), int(counts.max())
    group_of_sorted = torch.repeat_interleave(torch.arange(n_groups, device=units.device), counts)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(order.numel(), device=units.device) - starts[group_of_sorted]
    flat_slot = group_of_sorted * slots + rank
    slot_unit = torch.zeros(n_groups * slots, dtype=torch.long, device=units.device)
    slot_unit[flat_slot] = order
    slot_valid = torch.zeros(n_groups * slots, dtype=torch.bool, device=units.device)
    slot_valid[flat_slot] = True
    unit_slot = torch.empty_like(order)
    unit_slot[order] = flat_slot
    # Zero-padding positions of each window in the token grid (SAM2 pads at the bottom/right).
    window_of_group = group_key % (windows_h * windows_w)
    tokens_h, tokens_w = grid[0] * unit_side, grid[1] * unit_side
    real_h = (tokens_h - (window_of_group // windows_w) * window).clamp(max=window)
    real_w = (tokens_w - (window_of_group % windows_w) * window).clamp(max=window)
    n_pad = (window * window - real_h * real_w).float()
    pad_logit = torch.where(n_pad > 0, n_pad.clamp(min=1).log(), torch.full_like(n_pad, -math.inf))
    return _WindowGroups(slot_unit.view(n_groups, slots), slot_valid.view(n_groups, slots), unit_slot, pad_logit)


def _pool_units(x: torch.Tensor, stride: tuple[int, int] | None) -> torch.Tensor:
    """2×2 max pooling inside each unit: (B, V, s, s, C) -> (B, V, s/2, s/2, C)."""
    if not stride:
        return x
    b, v, s, _, c = x.shape
    pooled = F.max_pool2d(x.reshape(b * v, s, s, c).permute(0, 3, 1, 2), kernel_size=stride, stride=stride)
    return pooled.permute(0, 2, 3, 1).reshape(b, v, s // stride[0], s // stride[1], c)


def _packed_attention(block, q, k, v, units, grid, unit_side, cache: dict) -> torch.Tensor:
    """Windowed attention of a block over visible units packed by window.

    q: (B, V, tq, heads, hd); k, v: (B, V, tk, heads, hd). Returns (B, V, tq, heads * hd).
    """
    batch, n_visible, tq, heads, hd = q.shape
    tk = k.shape[2]
    key = (unit_side, block.window_size)  # blocks with the same window share one packing
    if key not in cache:
        cache[key] = _window_groups(units, grid, unit_side, block.window_size)
    groups = cache[key]
    n_groups, slots = groups.slot_unit.shape

    # Token rows of each packed window; empty slots point anywhere (they are masked out as keys and
    # their query outputs are dropped).
    def token_rows(per_unit: int) -> torch.Tensor:  # (N, M * per_unit)
        base = groups.slot_unit[:, :, None] * per_unit + torch.arange(per_unit, device=q.device)
        return base.reshape(n_groups, slots * per_unit)

    # The zero-padding keys of SAM2's window partition: key/value = the qkv layer's bias, appended as
    # the last key of every window. Broadcast (expand), not gathered: a gather that repeats one row
    # N times accumulates N gradients in thread order in the backward, and the bias then differs
    # run to run at 2+ threads. Duplicate gathers below only ever repeat rows whose gradient is 0
    # (masked keys, dropped queries), so they stay bit-reproducible.
    bias = block.attn.qkv.bias
    bias = torch.zeros(3 * heads * hd, dtype=q.dtype, device=q.device) if bias is None else bias
    pad_k, pad_v = bias.view(3, heads, hd)[1:].to(q.dtype).unbind(0)
    key_rows = token_rows(tk)

    def with_pad(rows: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:  # (N, heads, M * tk + 1, hd)
        return torch.cat([rows, pad.expand(n_groups, 1, heads, hd)], dim=1).transpose(1, 2)

    qp = q.reshape(-1, heads, hd)[token_rows(tq)].transpose(1, 2)  # (N, heads, M * tq, hd)
    kp = with_pad(k.reshape(-1, heads, hd)[key_rows], pad_k)
    vp = with_pad(v.reshape(-1, heads, hd)[key_rows], pad_v)
    key_logit = torch.zeros(n_groups, slots, tk, dtype=q.dtype, device=q.device)
    key_logit = key_logit.masked_fill(~groups.slot_valid[:, :, None], -math.inf).reshape(n_groups, -1)
    key_logit = torch.cat([key_logit, groups.pad_logit.to(q.dtype)[:, None]], dim=1)
    out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=key_logit[:, None, None, :], scale=block.attn.scale)
    out = out.transpose(1, 2).reshape(n_groups * slots, tq, heads * hd)
    return out[groups.unit_slot].view(batch, n_visible, tq, heads * hd)


def _sparse_block(block, x: torch.Tensor, units: torch.Tensor, grid: tuple[int, int], cache: dict) -> torch.Tensor:
    """One Sam2MultiScaleBlock over visible units: x (B, V, s, s, C_in) -> (B, V, s', s', C_out)."""
    batch, n_visible, side, _, channels = x.shape
    if block.window_size > 0 and side % block.window_size == 0:
        # Windows inside units: the block itself, each unit a tiny image (exact, no padding).
        out = block(x.reshape(batch * n_visible, side, side, channels))
        return out.view(batch, n_visible, *out.shape[1:])
    attn = block.attn
    heads = attn.num_attention_heads
    normed = block.layer_norm1(x)
    residual = _pool_units(block.proj(normed), block.query_stride) if block.dim != block.dim_out else x
    qkv = attn.qkv(normed).view(batch, n_visible, side * side, 3, heads, -1)
    query, key, value = qkv.unbind(3)
    out_side = side
    if block.query_stride:
        hd = query.shape[-1]
        query = _pool_units(query.reshape(batch, n_visible, side, side, heads * hd), block.query_stride)
        out_side = query.shape[2]
        query = query.reshape(batch, n_visible, out_side * out_side, heads, hd)
    if block.window_size == 0:  # global attention among all visible tokens of each image
        flat = [t.reshape(batch, -1, heads, t.shape[-1]).transpose(1, 2) for t in (query, key, value)]
        out = F.scaled_dot_product_attention(*flat, scale=attn.scale).transpose(1, 2)
    else:
        out = _packed_attention(block, query, key, value, units, grid, side, cache)
    out = attn.proj(out.reshape(batch, n_visible, out_side, out_side, -1))
    hidden = residual + out
    return hidden + block.mlp(block.layer_norm2(hidden))


def sparse_trunk_forward(trunk: nn.Module, pixels: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """The sparse path: only visible units are processed.

    Args:
        pixels: (B, 3, H, W), H and W multiples of 32; mask: bool (B, n_units), the same count per row.
    Returns:
        the four stage outputs, each (B, V, s_i, s_i, C_i) with s_i = 8, 4, 2, 1 tokens per unit side;
        units in the order of `visible_units(mask)` (ascending).
    """
    from samadapt.modeling.masking import visible_units

    grid = (pixels.shape[-2] // MASK_UNIT_PIXELS, pixels.shape[-1] // MASK_UNIT_PIXELS)
    units = visible_units(mask).to(pixels.device)
    x = gather_units(grid_to_units(embed_masked(trunk, pixels, mask, grid), grid), units)
    stages, cache = [], {}
    for index, block in enumerate(trunk.blocks):
        x = _sparse_block(block, x, units, grid, cache)
        if index in trunk.stage_ends:
            stages.append(x)
    return stages
