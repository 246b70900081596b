"""SAM2's image encoder (Hiera trunk + FPN neck + the decoder's stride-4/8 projections) written for
inference speed, over the parameters of a transformers `Sam2Model` (shared, never copied).

The arithmetic is the plain model's: same layer norms, same zero padding of windows (padded tokens
take part in attention as keys, as in Meta's code), same max-pooled queries, same exact GELU. What
differs is where the plain model spends its time on a CPU (the profile, and how much each change
saves, are in docs/benchmarks.md, "Fast SAM2 encoder"; timings move with the CPU and torch build):

* layout copies: windows are cut with one copy of the layer-norm output, and the
  attention output goes back to the image grid through an in-place strided add into the residual
  instead of two `.contiguous()` copies;
* a discarded (B, L, heads, heads) attention product that transformers computes in every block;
* the neck's 1×1 convolutions run as matrix products on channels-last tokens (no permutes), and the
  stride-4/8 levels, whose only consumer is the decoder's 1×1 `conv_s0`/`conv_s1`, are folded into
  one product each (96→32 and 192→64 channels instead of 96→256→32 and 192→256→64);
* the neck's sine position encodings, which `encode` never uses, are not computed;
* fresh allocations: residual updates are in place.

Shapes: B images, S input size, tokens channels-last (B, H, W, C).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def plain_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool = False) -> torch.Tensor:
    out = F.linear(x, weight, bias)
    return F.gelu(out) if gelu else out


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool = False) -> torch.Tensor:
    """oneDNN's fp32 CPU matrix product: bias (and the exact GELU) applied in the kernel's epilogue,
    where `F.linear` first copies the broadcast bias into the output and GELU is a second pass."""
    if gelu:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], "none")
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _max2x2(x: torch.Tensor) -> torch.Tensor:
    """2×2 max pool, stride 2, over dims 1 and 3 of a (N, H, ..., W, ..., C)-shaped view given as
    x[:, :, 0/1, :, 0/1]: three element-wise maxima of strided quarter views, which run several
    times faster on CPU than a reduction (`amax`) over two non-adjacent strided dimensions."""
    out = torch.maximum(x[:, :, 0, :, 0], x[:, :, 0, :, 1])
    torch.maximum(out, x[:, :, 1, :, 0], out=out)
    return torch.maximum(out, x[:, :, 1, :, 1], out=out)


def _pool2(x: torch.Tensor) -> torch.Tensor:
    """2×2 max pool, stride 2, of channels-last (B, H, W, C) -> (B, H/2, W/2, C) (H, W even)."""
    b, h, w, c = x.shape
    return _max2x2(x.view(b, h // 2, 2, w // 2, 2, c))


def _partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, int, int]:
    """(B, H, W, C) -> (B·nh·nw, window², C) zero-padded windows in raster order, plus nh, nw.

    One copy: the padding and the window permute are written together."""
    b, h, w, c = x.shape
    nh, nw = -(-h // window), -(-w // window)
    if nh * window != h or nw * window != w:
        x = F.pad(x, (0, 0, 0, nw * window - w, 0, nh * window - h))
    x = x.view(b, nh, window, nw, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b * nh * nw, window * window, c), nh, nw


def _add_unpartitioned(residual: torch.Tensor, windows: torch.Tensor, window: int, nh: int, nw: int) -> torch.Tensor:
    """residual (B, H, W, C) + windows (B·nh·nw, window², C) put back on the grid (padding dropped).

    Without padding this is an in-place add through a strided view (no copy of the windows)."""
    b, h, w, c = residual.shape
    grid = windows.view(b, nh, nw, window, window, c).permute(0, 1, 3, 2, 4, 5)
    if nh * window == h and nw * window == w:
        residual.view(b, nh, window, nw, window, c).add_(grid)
        return residual
    grid = grid.reshape(b, nh * window, nw * window, c)[:, :h, :w]
    return residual.add_(grid)


def _attention(attn: nn.Module, tokens: torch.Tensor, side: tuple[int, int], pool: bool, linear=plain_linear) -> torch.Tensor:
    """Multi-head self-attention of SAM2's Hiera over groups of tokens.

    Args:
        tokens: (N, h·w, C_in), N windows (or images, for global attention) of h×w tokens.
        side: (h, w) of each group.
        pool: max-pool the queries 2×2 (the first block of stages 2-4).
    Returns:
        (N, h·w, C_out), or (N, h·w/4, C_out) when pooled.
    """
    n, length, _ = tokens.shape
    heads = attn.num_attention_heads
    qkv = linear(tokens, attn.qkv.weight, attn.qkv.bias).view(n, length, 3, heads, -1)
    # (3, N, heads, L, d) strided views: the CPU flash-attention kernel reads them without copies
    if pool:  # pool the queries on the grid (channels-last), then split heads
        h, w = side
        query = _max2x2(qkv[:, :, 0].view(n, h // 2, 2, w // 2, 2, -1))  # (N, h/2, w/2, C)
        query = query.view(n, length // 4, heads, -1).transpose(1, 2)
        key, value = qkv[:, :, 1:].permute(2, 0, 3, 1, 4).unbind(0)
    else:
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(query, key, value)  # (N, heads, Lq, d)
    out = out.transpose(1, 2).flatten(2)
    return linear(out, attn.proj.weight, attn.proj.bias)


def block_forward(block: nn.Module, x: torch.Tensor, linear=plain_linear) -> torch.Tensor:
    """One `Sam2MultiScaleBlock`. x: (B, H, W, C) -> (B, H', W', C') (H' = H/2 in pooling blocks).

    `x` may be overwritten (it is the caller's residual stream)."""
    b, h, w, _ = x.shape
    normed = _layer_norm(x, block.layer_norm1)
    pool = bool(block.query_stride)
    if block.dim != block.dim_out:  # the first block of a stage: widened, pooled residual
        x = _pool2(linear(normed, block.proj.weight, block.proj.bias))
    window = block.window_size
    if window > 0:
        windows, nh, nw = _partition(normed, window)
        out = _attention(block.attn, windows, (window, window), pool, linear)
        x = _add_unpartitioned(x, out, window // 2 if pool else window, nh, nw)
    else:
        out = _attention(block.attn, normed.view(b, h * w, -1), (h, w), pool, linear)
        x = x.add_(out.view(x.shape))
    mlp = block.mlp
    hidden = linear(_layer_norm(x, block.layer_norm2), mlp.proj_in.weight, mlp.proj_in.bias, gelu=True)
    return x.add_(linear(hidden, mlp.proj_out.weight, mlp.proj_out.bias))


def position_embedding(backbone: nn.Module, height: int, width: int) -> torch.Tensor:
    """(1, H, W, C) Hiera position embedding: bicubic background + tiled window embedding."""
    pos = F.interpolate(backbone.pos_embed, size=(height, width), mode="bicubic")
    window = backbone.pos_embed_window
    pos = pos + window.tile([a // b for a, b in zip(pos.shape, window.shape)])
    return pos.permute(0, 2, 3, 1).contiguous()


def _conv1x1(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A 1×1 convolution as (weight (C_out, C_in), bias (C_out,)) for `F.linear` on channels-last maps."""
    if conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.padding not in ((0, 0), "valid") or conv.groups != 1:
        raise NotImplementedError(f"only 1×1 convolutions fold into matrix products, got {conv}")
    weight = conv.weight.flatten(1)
    bias = conv.bias if conv.bias is not None else weight.new_zeros(weight.shape[0])
    return weight, bias


def fold_1x1(first: nn.Conv2d, second: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """second(first(x)) for two 1×1 convolutions as one (weight, bias); float64 products, so the
    folded weights differ from the two-step result only by fp32 rounding of the output."""
    w1, b1 = (t.double() for t in _conv1x1(first))
    w2, b2 = (t.double() for t in _conv1x1(second))
    dtype = first.weight.dtype
    return (w2 @ w1).to(dtype), (w2 @ b1 + b2).to(dtype)


class HieraDerived:
    """Tensors derived from the weights once per input size: the position embedding and the
    folded neck/decoder projections. Rebuilt when any source parameter changes (loading weights
    bumps the tensors' version counters), so they never go stale."""

    def __init__(self, model):
        self.model = model
        self._key = None
        self.pos: torch.Tensor | None = None
        self.s4: tuple[torch.Tensor, torch.Tensor] | None = None
        self.s8: tuple[torch.Tensor, torch.Tensor] | None = None

    def _sources(self) -> list[torch.Tensor]:
        hf = self.model.hf
        backbone, neck, decoder = hf.vision_encoder.backbone, hf.vision_encoder.neck, hf.mask_decoder
        return [backbone.pos_embed, backbone.pos_embed_window, *neck.convs[-1].parameters(),
                *neck.convs[-2].parameters(), *decoder.conv_s0.parameters(), *decoder.conv_s1.parameters()]

    def refresh(self, image_size: int) -> "HieraDerived":
        sources = self._sources()
        key = (image_size, tuple((t._version, t.data_ptr(), t.device, t.dtype) for t in sources))
        if key == self._key:
            return self
        hf = self.model.hf
        neck, decoder = hf.vision_encoder.neck, hf.mask_decoder
        with torch.no_grad():
            side = image_size // 4  # 7×7 stem, stride 4, padding 3 (see `check_supported`)
            self.pos = position_embedding(hf.vision_encoder.backbone, side, side)
            # neck.convs run from the coarsest level: convs[-1] reads stage 1 (stride 4)
            self.s4 = fold_1x1(neck.convs[-1], decoder.conv_s0)
            self.s8 = fold_1x1(neck.convs[-2], decoder.conv_s1)
        self._key = key
        return self

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """(pos, s4 weight, s4 bias, s8 weight, s8 bias): the extra inputs of `encode_sam2`."""
        return (self.pos, *self.s4, *self.s8)


def encode_sam2(model, pixel_values: torch.Tensor, pos: torch.Tensor, s4_weight: torch.Tensor, s4_bias: torch.Tensor,
                s8_weight: torch.Tensor, s8_bias: torch.Tensor, linear=plain_linear):
    """`SegmentAnything.encode` for a SAM2 model, fast path (no autograd: updates are in place).

    Args:
        pixel_values: (B, 3, S, S).
        pos, s4_weight, ...: `HieraDerived.refresh(S).tensors()`, passed in (not read from an
            object) so that a compiled version of this function sees them as plain inputs.
    Returns:
        (embedding (B, 256, S/16, S/16) incl. `no_mem_embed`, s4 (B, 32, S/4, S/4), s8 (B, 64, S/8, S/8)),
        all contiguous NCHW.
    """
    hf = model.hf
    backbone, neck = hf.vision_encoder.backbone, hf.vision_encoder.neck
    conv = backbone.patch_embed.projection
    x = conv(pixel_values.to(conv.weight.dtype))  # (B, C, S/4, S/4)
    x = (x.permute(0, 2, 3, 1) + pos).contiguous()  # one write, channels-last
    stage_outputs = []
    blocks = list(backbone.blocks)
    ends = set(backbone.stage_ends)
    for index, block in enumerate(blocks):
        x = block_forward(block, x, linear)
        if index in ends:
            # a following non-pooling block would update x in place; a pooling block starts anew
            following = blocks[index + 1] if index + 1 < len(blocks) else None
            stage_outputs.append(x.clone() if following is not None and not following.query_stride else x)
    return _neck(neck, hf, stage_outputs, (s4_weight, s4_bias), (s8_weight, s8_bias), linear)


def _neck(neck: nn.Module, hf: nn.Module, stages: list[torch.Tensor], s4_proj, s8_proj, linear=plain_linear):
    """FPN as SAM2's image path uses it: stride 16 = lateral(stage 3) + nearest-2× top-down of
    lateral(stage 4); strides 4 and 8 are lateral only (not top-down levels) and are projected by
    the folded decoder convolutions."""
    levels = len(neck.convs)
    if levels != 4 or list(neck.fpn_top_down_levels) != [2, 3] or hf.vision_encoder.num_feature_levels != 3:
        raise NotImplementedError("fast SAM2 neck expects 4 levels, top-down levels [2, 3] and 3 feature levels")
    weight, bias = _conv1x1(neck.convs[0])
    top = linear(stages[3], weight, bias)  # (B, S/32, S/32, 256)
    weight, bias = _conv1x1(neck.convs[1])
    s16 = linear(stages[2], weight, bias)
    b, h, w, c = top.shape
    s16.view(b, h, 2, w, 2, c).add_(top[:, :, None, :, None, :])
    s16.add_(hf.no_memory_embedding.reshape(1, 1, 1, -1))
    s4 = linear(stages[0], *s4_proj)
    s8 = linear(stages[1], *s8_proj)
    return tuple(t.permute(0, 3, 1, 2).contiguous() for t in (s16, s4, s8))


def check_supported(model) -> None:
    """Raise NotImplementedError unless `model` is a SAM2 whose structure the fast path reproduces."""
    if getattr(model, "family", None) != "sam2":
        raise NotImplementedError(f"the fast encoder covers SAM2 (Hiera) models, not {getattr(model, 'name', model)}")
    backbone = model.hf.vision_encoder.backbone
    stem = backbone.patch_embed.projection
    if (stem.kernel_size, stem.stride, stem.padding) != ((7, 7), (4, 4), (3, 3)):
        raise NotImplementedError(f"patch embedding {stem} (expected 7×7, stride 4, padding 3)")
    for block in backbone.blocks:
        stride = block.query_stride
        if stride and (tuple(stride) != (2, 2) or block.dim == block.dim_out):
            raise NotImplementedError(f"query stride {stride} (only 2×2 pooling at a width change is implemented)")
        if type(block.mlp.activation).__name__ != "GELUActivation":
            raise NotImplementedError(f"MLP activation {type(block.mlp.activation).__name__}")
    if model.image_size % 32:
        raise NotImplementedError(f"image size {model.image_size} is not a multiple of 32")
