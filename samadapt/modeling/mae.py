"""The masked autoencoder around SAM2's Hiera trunk: pixel targets, loss, light decoder.

Design:
* The encoder is the trunk itself (dense or sparse path, `samadapt/modeling/sparse_hiera.py`); only the trunk
  is kept after pre-training. The decoder and the dense path's mask token are discarded.
* Decoder input, one token per 32-pixel mask unit: each of the four stage outputs of a visible unit
  (s×s tokens of width C, s = 8, 4, 2, 1) is flattened and projected to the decoder width, and the four
  projections are summed. This is Hiera's multi-scale fusion (a convolution with kernel = stride = the
  unit); it feeds the decoder the high-resolution stages that SAM2's mask decoder also uses. Masked
  units get a learned decoder mask token; a fixed 2-D sine-cosine embedding of the unit position is
  added, so any image size works.
* A few pre-norm transformer blocks (default 2 × width 256, 8 heads) over all units, then a linear
  head predicting the pixels of the masked units only.
* Target: each unit is cut into `patch_size`² pixel patches (default 16: 4 patches per unit) of the
  normalised input image; each patch is normalised by its own mean and variance over its
  `patch_size² · 3` values (`(x - mean) / sqrt(var + 1e-6)`, MAE's norm-pix). A 16-pixel patch keeps
  the local contrast of vessels while the unit-level token keeps the decoder cheap.
* Loss: mean squared error over the masked units' patches only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from samadapt.modeling.masking import MASK_UNIT_PIXELS, visible_units
from samadapt.modeling.sparse_hiera import dense_trunk_forward, gather_units, grid_to_units, sparse_trunk_forward

NORM_PIX_EPS = 1e-6
PATHS = ("sparse", "dense")


def patchify(pixels: torch.Tensor, patch_size: int, unit: int = MASK_UNIT_PIXELS) -> torch.Tensor:
    """(B, C, H, W) -> (B, n_units, k, patch_size² · C): k = (unit / patch_size)² patches per unit,
    units and patches in raster order, each patch's values ordered (row, column, channel)."""
    b, c, height, width = pixels.shape
    gh, gw, per = height // unit, width // unit, unit // patch_size
    x = pixels.reshape(b, c, gh, per, patch_size, gw, per, patch_size)
    x = x.permute(0, 2, 5, 3, 6, 4, 7, 1)  # b, gh, gw, per_h, per_w, p, p, c
    return x.reshape(b, gh * gw, per * per, patch_size * patch_size * c)


def unpatchify(patches: torch.Tensor, grid: tuple[int, int], channels: int = 3, unit: int = MASK_UNIT_PIXELS) -> torch.Tensor:
    """Inverse of `patchify`: (B, n_units, k, p² · C) -> (B, C, H, W)."""
    b, _, k, values = patches.shape
    per = math.isqrt(k)
    p = math.isqrt(values // channels)
    x = patches.reshape(b, grid[0], grid[1], per, per, p, p, channels).permute(0, 7, 1, 3, 5, 2, 4, 6)
    return x.reshape(b, channels, grid[0] * unit, grid[1] * unit)


def normalise_patches(patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-patch norm-pix over the last axis. Returns (normalised, mean, std) with std = sqrt(var + 1e-6)."""
    mean = patches.mean(dim=-1, keepdim=True)
    std = (patches.var(dim=-1, unbiased=False, keepdim=True) + NORM_PIX_EPS).sqrt()
    return (patches - mean) / std, mean, std


def reconstruction_loss(
    pred_masked: torch.Tensor, pixels: torch.Tensor, mask: torch.Tensor, patch_size: int, norm_pix: bool = True
) -> torch.Tensor:
    """MSE between predictions and targets of the masked units only.

    Args:
        pred_masked: (B, n_masked, k, p² · C) predictions for the masked units, ascending unit order.
        pixels: (B, C, H, W) the (unmasked) input image; mask: bool (B, n_units), True = masked.
    """
    target = patchify(pixels, patch_size)[mask.to(pixels.device)]  # (B * n_masked, k, p² · C), row-major
    if norm_pix:
        target = normalise_patches(target)[0]
    return ((pred_masked.reshape(target.shape).float() - target.float()) ** 2).mean()


def sincos_embedding_2d(grid: tuple[int, int], dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding: (grid_h * grid_w, dim), half the channels per axis."""
    quarter = dim // 4
    freq = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    parts = []
    for coord in (rows.reshape(-1), cols.reshape(-1)):
        angles = coord.float()[:, None] * freq[None]
        parts += [angles.sin(), angles.cos()]
    emb = torch.cat(parts, dim=1)
    return torch.nn.functional.pad(emb, (0, dim - emb.shape[1]))


def stage_unit_sides(trunk_config, unit: int = MASK_UNIT_PIXELS) -> list[int]:
    """Tokens per unit side at the output of each stage (8, 4, 2, 1 for SAM2's Hiera)."""
    side = unit // trunk_config.patch_stride[0]
    sides = []
    for stage in range(len(trunk_config.blocks_per_stage)):
        if 0 < stage <= trunk_config.num_query_pool_stages:
            side //= trunk_config.query_stride[0]
        sides.append(side)
    return sides


class MaeDecoder(nn.Module):
    """Fuses the visible units' stage features, fills masked units, predicts their pixels."""

    def __init__(self, stage_dims: list[int], stage_sides: list[int], patch_size: int = 16,
                 dim: int = 256, depth: int = 2, heads: int = 8, channels: int = 3):
        super().__init__()
        if MASK_UNIT_PIXELS % patch_size:
            raise ValueError(f"patch size {patch_size} must divide the mask unit ({MASK_UNIT_PIXELS})")
        self.dim = dim
        self.fuse = nn.ModuleList(nn.Linear(c * s * s, dim) for c, s in zip(stage_dims, stage_sides))
        self.mask_token = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.patches_per_unit = (MASK_UNIT_PIXELS // patch_size) ** 2
        self.patch_values = patch_size * patch_size * channels
        self.head = nn.Linear(dim, self.patches_per_unit * self.patch_values)

    def forward(self, stage_units: list[torch.Tensor], visible: torch.Tensor, mask: torch.Tensor,
                grid: tuple[int, int]) -> torch.Tensor:
        """
        Args:
            stage_units: per stage (B, V, s, s, C) features of the visible units.
            visible: long (B, V) their unit indices; mask: bool (B, U).
        Returns:
            (B, n_masked, k, p² · C) predictions for the masked units, ascending unit order.
        """
        batch, n_units = mask.shape
        fused = sum(proj(f.flatten(2)) for proj, f in zip(self.fuse, stage_units))  # (B, V, D)
        tokens = self.mask_token.to(fused.dtype).expand(batch, n_units, self.dim).clone()
        tokens.scatter_(1, visible[..., None].expand(-1, -1, self.dim).to(fused.device), fused)
        tokens = tokens + sincos_embedding_2d(grid, self.dim).to(tokens)
        for block in self.blocks:
            tokens = block(tokens)
        masked_tokens = self.norm(tokens[mask.to(tokens.device)])  # (B * n_masked, D)
        pred = self.head(masked_tokens)
        return pred.view(batch, -1, self.patches_per_unit, self.patch_values)


@dataclass
class MaeOutput:
    loss: torch.Tensor
    pred: torch.Tensor  # (B, n_masked, k, p² · C), in norm-pix space when norm_pix
    mask: torch.Tensor  # bool (B, n_units)


class MaskedAutoencoder(nn.Module):
    """MAE of SAM2's Hiera trunk (`transformers` `Sam2HieraDetModel`, e.g. `Sam2Model.vision_encoder.backbone`)."""

    def __init__(self, trunk: nn.Module, patch_size: int = 16, decoder_dim: int = 256, decoder_depth: int = 2,
                 decoder_heads: int = 8, norm_pix: bool = True, dense_mask_token: bool = True):
        super().__init__()
        self.trunk = trunk
        self.patch_size = patch_size
        self.norm_pix = norm_pix
        config = trunk.config
        # The dense path's learned token for masked units. A sparse-only model leaves it out so that
        # every parameter receives a gradient (distributed data parallel requires it).
        self.mask_token = None
        if dense_mask_token:
            self.mask_token = nn.Parameter(torch.zeros(config.hidden_size))
            nn.init.normal_(self.mask_token, std=0.02)
        self.decoder = MaeDecoder(list(config.embed_dim_per_stage), stage_unit_sides(config), patch_size,
                                  decoder_dim, decoder_depth, decoder_heads, config.num_channels)

    def encode(self, pixels: torch.Tensor, mask: torch.Tensor, path: str = "sparse") -> tuple[list[torch.Tensor], torch.Tensor]:
        """Stage features of the visible units, each (B, V, s, s, C), and their indices (B, V)."""
        visible = visible_units(mask).to(pixels.device)
        if path == "sparse":
            return sparse_trunk_forward(self.trunk, pixels, mask), visible
        if path != "dense":
            raise ValueError(f"path must be one of {PATHS}, got {path!r}")
        if self.mask_token is None:
            raise ValueError("this model was built without the dense path's mask token (dense_mask_token=False)")
        grid = (pixels.shape[-2] // MASK_UNIT_PIXELS, pixels.shape[-1] // MASK_UNIT_PIXELS)
        stages = dense_trunk_forward(self.trunk, pixels, mask, self.mask_token)
        return [gather_units(grid_to_units(s, grid), visible) for s in stages], visible

    def forward(self, pixels: torch.Tensor, mask: torch.Tensor, path: str = "sparse") -> MaeOutput:
        grid = (pixels.shape[-2] // MASK_UNIT_PIXELS, pixels.shape[-1] // MASK_UNIT_PIXELS)
        stages, visible = self.encode(pixels, mask, path)
        pred = self.decoder(stages, visible, mask, grid)
        loss = reconstruction_loss(pred, pixels, mask, self.patch_size, self.norm_pix)
        return MaeOutput(loss=loss, pred=pred, mask=mask)

    @torch.no_grad()
    def reconstruct(self, pixels: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Image (B, C, H, W) with masked units replaced by the prediction, mapped back from norm-pix
        with the true patches' own mean and std (the usual MAE visualisation)."""
        grid = (pixels.shape[-2] // MASK_UNIT_PIXELS, pixels.shape[-1] // MASK_UNIT_PIXELS)
        patches = patchify(pixels, self.patch_size)
        masked = patches[mask]
        values = pred.reshape(masked.shape).to(patches.dtype)
        if self.norm_pix:
            _, mean, std = normalise_patches(masked)
            values = values * std + mean
        patches = patches.clone()
        patches[mask] = values
        return unpatchify(patches, grid, pixels.shape[1])
