"""SAM2's memory path with gradients: one object tracked through a clip of frames, for training.

transformers runs `Sam2VideoModel.forward` under `torch.inference_mode`, so training goes through
the same per-frame pieces it is made of (`_run_single_frame_inference`, `_batch_encode_memories`)
in the same order, on a session of its own: the masks and scores are those `samadapt propagate`
computes, and gradients flow through memory attention, the memory encoder, the object pointers
and the mask decoder. The image encoder is frozen and runs once per clip, batched over its frames.

The video model stays in eval mode while it trains: transformers leaves out the object scores in
training mode, and SAM2's inference (the one the trained weights serve) uses no dropout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# Parameter-name prefixes of the frozen image encoder (the neck's 1x1 projections conv_s0/conv_s1
# belong to the mask decoder and train with it).
FROZEN_PREFIXES = ("vision_encoder.",)


@dataclass
class ClipPrompt:
    """The prompt on a clip's first frame, in model-input pixels: a mask (S, S) in {0, 1}, or points
    (P, 2) as (x, y) with labels (P,) (2/3: box corners)."""

    mask: torch.Tensor | None = None
    points: torch.Tensor | None = None
    labels: torch.Tensor | None = None


@dataclass
class ClipOutput:
    """Per frame of a clip: mask logits (T, S, S) at input resolution and object-score logits (T,)."""

    logits: torch.Tensor
    scores: torch.Tensor


class MemoryPathTrainer(nn.Module):
    """A `Sam2VideoModel` whose image encoder is frozen; `track(frames, prompt)` follows one object
    through a clip from its prompted first frame, and `forward(clips)` does it for a batch of clips
    in one call (under DistributedDataParallel a step is one forward, then one backward)."""

    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf = hf
        for name, parameter in hf.named_parameters():
            parameter.requires_grad_(not name.startswith(FROZEN_PREFIXES))
        hf.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.hf.eval()  # see the module docstring
        return self

    def trainable_counts(self) -> dict[str, int]:
        trainable = sum(p.numel() for p in self.hf.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in self.hf.parameters() if not p.requires_grad)
        return {"trainable": trainable, "frozen": frozen}

    def encode_frames(self, frames: torch.Tensor) -> list[dict]:
        """The session's per-frame feature cache for frames (T, 3, S, S): the frozen encoder without
        gradient, then the decoder's trainable projections of the two high-resolution levels."""
        hf = self.hf
        with torch.no_grad():
            vision = hf.vision_encoder(frames, return_dict=True)
        maps = list(vision.fpn_hidden_states)  # (T, 256, S/4..S/16, ...)
        maps[0] = hf.mask_decoder.conv_s0(maps[0])  # (T, 32, S/4, S/4)
        maps[1] = hf.mask_decoder.conv_s1(maps[1])  # (T, 64, S/8, S/8)
        positions = list(vision.fpn_position_encoding)
        cache = []
        for t in range(frames.shape[0]):
            # the video model's layout: (H*W, 1, C) per level, high to low resolution
            cache.append({"vision_feats": [m[t:t + 1].flatten(2).permute(2, 0, 1) for m in maps],
                          "vision_pos_embeds": [p[t:t + 1].flatten(2).permute(2, 0, 1) for p in positions]})
        return cache

    def forward(self, clips: list[tuple[torch.Tensor, ClipPrompt]]) -> list[ClipOutput]:
        """`track` for each (frames, prompt) of a batch of clips."""
        return [self.track(frames, prompt) for frames, prompt in clips]

    def track(self, frames: torch.Tensor, prompt: ClipPrompt) -> ClipOutput:
        """Track the object prompted on frames[0] through frames (T, 3, S, S), in clip order."""
        session, obj_idx = self._session(frames, prompt)
        logits, scores = [], []
        for t in range(frames.shape[0]):
            out = self._frame(session, obj_idx, t, prompt if t == 0 else None)
            logits.append(out["high_res_masks"].reshape(out["high_res_masks"].shape[-2:]))
            scores.append(out["object_score_logits"].reshape(()))
        return ClipOutput(torch.stack(logits), torch.stack(scores))

    def _session(self, frames: torch.Tensor, prompt: ClipPrompt):
        from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

        size = self.hf.config.image_size
        session = Sam2VideoInferenceSession(video=None, video_height=size, video_width=size,
                                            dtype=torch.float32, inference_device=frames.device,
                                            inference_state_device=frames.device)
        session.processed_frames = dict(enumerate(frames))
        for t, features in enumerate(self.encode_frames(frames)):
            session.cache.cache_vision_features(t, features)
        obj_idx = session.obj_id_to_idx(1)
        if prompt.mask is not None:
            session.add_mask_inputs(obj_idx, 0, prompt.mask.float().reshape(1, 1, *prompt.mask.shape[-2:]))
        else:
            session.add_point_inputs(obj_idx, 0, {"point_coords": prompt.points.float().reshape(1, 1, -1, 2),
                                                  "point_labels": prompt.labels.to(torch.int32).reshape(1, 1, -1)})
        return session, obj_idx

    def _frame(self, session, obj_idx: int, t: int, prompt: ClipPrompt | None) -> dict:
        """One frame as `Sam2VideoModel.forward` runs it: the prompted first frame is a conditioning
        frame, every later one is tracked from the memories of those before it."""
        point_inputs = session.point_inputs_per_obj[obj_idx].get(t) if prompt is not None else None
        mask_inputs = session.mask_inputs_per_obj[obj_idx].get(t) if prompt is not None else None
        conditioning = prompt is not None
        out = self.hf._run_single_frame_inference(
            inference_session=session, obj_idx=obj_idx, frame_idx=t, batch_size=1,
            is_init_cond_frame=conditioning, point_inputs=point_inputs, mask_inputs=mask_inputs, reverse=False)
        session.store_output(obj_idx, t, output_value=out, is_conditioning_frame=conditioning)
        self.hf._batch_encode_memories(
            inference_session=session, frame_idx=t, objects_needing_memory_encoding=[obj_idx],
            high_res_masks_for_memory=[out["high_res_masks"]],
            object_score_logits_for_memory=[out["object_score_logits"]], is_mask_from_pts_per_obj=[conditioning])
        if not conditioning:
            session.frames_tracked_per_obj[obj_idx][t] = {"reverse": False}
        return out
