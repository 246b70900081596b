"""Data-dependent initialisation of SAM2's FPN neck after MAE pre-training from random weights.

MAE trains the Hiera trunk only; the neck that turns the trunk's stages into the decoder's
stride-16 image embedding keeps its random initialisation. On a trained trunk that random neck
produces embeddings dominated by large per-channel offsets, several times the scale of a random
encoder's (the measured sizes, which depend on the data and the budget, are in docs/mae.md, "Neck
calibration at export"). A decoder trained on frozen features (few-shot, `finetune --train
decoder`) then sees nearly the same vector at every position and learns almost nothing.

`calibrate_neck` measures the stride-16 embedding on pre-training images and folds an affine map
into the neck's two convolutions that feed it, so the embedding comes out with zero mean per channel
and unit overall std (channels keep their relative scales, so no dead channel is blown up). The
stride-4/8 features and everything downstream are untouched. Only for a random-init neck: a neck
trained with SAM2 (`--init` from official weights) is left alone, since its decoder expects it as is.
"""

from __future__ import annotations

import torch

# image embedding (stride 16) = convs[STRIDE16](stage 3) + upsampled convs[STRIDE32](stage 4)
STRIDE32, STRIDE16 = 0, 1


@torch.no_grad()
def embedding_statistics(model, batches) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean (256,) and the overall std (scalar) of the stride-16 embedding, without
    SAM2's `no_mem_embed`, over `batches` of pixel values (B, 3, S, S)."""
    total, total_sq, count = 0.0, 0.0, 0
    for pixels in batches:
        embedding = model.encode(pixels).embedding.double() - model.hf.no_memory_embedding.double().view(1, -1, 1, 1)
        total = total + embedding.sum(dim=(0, 2, 3))
        total_sq = total_sq + (embedding**2).sum(dim=(0, 2, 3))
        count += embedding.shape[0] * embedding.shape[2] * embedding.shape[3]
    mean = total / count
    centred_var = (total_sq / count - mean**2).clamp(min=0).mean()  # average within-channel variance
    return mean.float(), centred_var.sqrt().float()


@torch.no_grad()
def calibrate_neck(model, batches) -> dict:
    """Fold `(y - mean) / std` into the neck (in place). Returns the statistics before and after.

    `model` is a SAM2 `SegmentAnything`; `batches` an iterable of pixel batches (B, 3, S, S)."""
    if model.family != "sam2":
        raise ValueError("neck calibration applies to SAM2's FPN neck")
    batches = list(batches)
    was_training = model.training
    model.eval()
    mean, std = embedding_statistics(model, batches)
    scale = 1.0 / std.clamp(min=1e-6)
    convs = model.hf.vision_encoder.neck.convs
    for index in (STRIDE16, STRIDE32):  # both terms of the sum get the same scale
        convs[index].weight.mul_(scale)
        convs[index].bias.mul_(scale)
    convs[STRIDE16].bias.sub_(mean * scale)
    after_mean, after_std = embedding_statistics(model, batches)
    model.train(was_training)
    return {"offset_norm_before": float(mean.norm()), "std_before": float(std),
            "offset_norm_after": float(after_mean.norm()), "std_after": float(after_std),
            "images": sum(b.shape[0] for b in batches)}
