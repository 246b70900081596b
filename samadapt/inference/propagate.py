"""Propagate objects through a stack of frames with SAM2's memory (`Sam2VideoModel`).

Works on the model's square input: frames are (3, S, S) normalised tensors and prompts are in
model-input pixels; `propagate_volume` does the geometry of real volumes around it.

SAM2's own schedule, per object: its prompted frames become conditioning frames; tracking runs
forward from its first prompted frame to the last frame (later prompted frames re-anchor it, and
every conditioning frame is in the memory of every tracked frame), then backward from the first
prompted frame to frame 0. Objects are independent in SAM2 (each has its own memory bank), so each
gets its own inference session; the sessions share one image-feature cache and run in lockstep,
so every frame is encoded once per pass whatever the number of objects.

Memory stays bounded: SAM2 reads the last `num_maskmem` (7) frames' memories and up to
`max_object_pointers_in_encoder` (16) object pointers, so stored outputs further away than that
are dropped as tracking moves on (those the backward pass will read are kept), and frames are
produced on demand by the caller's sequence rather than held as one tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch


@dataclass
class FramePrompt:
    """One object's prompt on one frame, in model-input pixels: a mask (S, S) in {0, 1}, or points
    (P, 2) as (x, y) with labels (P,) (1 positive, 0 negative, 2/3 box corners)."""

    obj_id: int
    frame: int
    mask: torch.Tensor | None = None
    points: torch.Tensor | None = None
    labels: torch.Tensor | None = None


@dataclass
class FrameResult:
    """One object on one frame: low-resolution mask logits (S/4, S/4) and the object score logit
    (> 0: present). `prompted` marks the object's conditioning frames."""

    frame: int
    obj_id: int
    logits: torch.Tensor
    score: float
    prompted: bool


class _LazyFrames:
    """The session's frame store: a mapping frame index -> (3, S, S) tensor read on demand."""

    def __init__(self, frames: Sequence[torch.Tensor]):
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.frames[index]


def _session(model, frames: _LazyFrames, cache=None):
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

    size = model.config.image_size
    session = Sam2VideoInferenceSession(video=None, video_height=size, video_width=size, dtype=torch.float32)
    session.processed_frames = frames
    if cache is not None:
        session.cache = cache
    return session


def _add_prompt(session, prompt: FramePrompt) -> None:
    obj_idx = session.obj_id_to_idx(prompt.obj_id)
    if prompt.mask is not None:
        session.add_mask_inputs(obj_idx, prompt.frame, prompt.mask.float().reshape(1, 1, *prompt.mask.shape[-2:]))
        session.remove_point_inputs(obj_idx, prompt.frame)
    else:
        points = prompt.points.float().reshape(1, 1, -1, 2)
        labels = prompt.labels.to(torch.int32).reshape(1, 1, -1)
        session.add_point_inputs(obj_idx, prompt.frame, {"point_coords": points, "point_labels": labels})
        session.remove_mask_inputs(obj_idx, prompt.frame)
    session.obj_with_new_inputs = [prompt.obj_id]


def _prune(session, frame: int, reverse: bool, first: int, window: int) -> None:
    """Drop stored outputs no later frame of this pass, nor the backward pass, will read."""
    outputs = session.output_dict_per_obj[0]["non_cond_frame_outputs"]
    for old in list(outputs):
        behind = old > frame + window if reverse else old < frame - window
        needed_backward = not reverse and first <= old <= first + window
        if behind and not needed_backward:
            del outputs[old]


@dataclass
class _Track:
    obj_id: int
    session: object
    first: int
    prompted: set
    stopped: bool = False


def _step(model, track: _Track, frame: int, reverse: bool, stop_when_absent: bool, window: int):
    if track.stopped and frame not in track.prompted:
        return None
    out = model(track.session, frame_idx=frame, reverse=reverse)
    score = float(out.object_score_logits.reshape(-1)[0])
    prompted = frame in track.prompted
    track.stopped = stop_when_absent and not prompted and score <= 0
    _prune(track.session, frame, reverse, track.first, window)
    return FrameResult(frame, track.obj_id, out.pred_masks[0, 0], score, prompted)


@torch.inference_mode()
def propagate(model, frames: Sequence[torch.Tensor], prompts: list[FramePrompt], *,
              stop_when_absent: bool = True,
              progress: Callable[[Iterator, int, str], Iterator] | None = None) -> Iterator[FrameResult]:
    """Yield a `FrameResult` per object and frame visited, forward pass first, then backward.

    Args:
        model: a `Sam2VideoModel` in eval mode.
        frames: N frames (3, S, S), normalised as for the image model; indexed on demand.
        prompts: at least one per object (several frames per object allowed).
        stop_when_absent: stop tracking an object in a direction once its object score says it
            is gone (until its next prompted frame); SAM2 itself keeps tracking.
        progress: optional wrapper (iterable, total, description) -> iterable, e.g. a progress bar.
    A frame visited by both passes (only an object's first prompted frame) is yielded twice.
    """
    store = _LazyFrames(frames)
    config = model.config
    window = max(config.num_maskmem, config.max_object_pointers_in_encoder)
    shared_cache = None
    tracks: dict[int, _Track] = {}
    for prompt in sorted(prompts, key=lambda p: (p.obj_id, p.frame)):
        if prompt.obj_id not in tracks:
            session = _session(model, store, shared_cache)
            shared_cache = session.cache
            tracks[prompt.obj_id] = _Track(prompt.obj_id, session, prompt.frame, set())
        track = tracks[prompt.obj_id]
        track.prompted.add(prompt.frame)
        _add_prompt(track.session, prompt)
        model(track.session, frame_idx=prompt.frame)  # encode the prompt: a conditioning frame
    wrap = progress or (lambda it, total, what: it)
    for reverse in (False, True):
        start = min(t.first for t in tracks.values()) if not reverse else max(t.first for t in tracks.values())
        order = range(start, len(store)) if not reverse else range(start, -1, -1)
        for frame in wrap(order, len(order), "backward" if reverse else "forward"):
            for track in tracks.values():
                # each object runs from its own first prompted frame, as in its own SAM2 session
                if (frame < track.first) if not reverse else (frame > track.first):
                    continue
                if reverse and track.first == 0:
                    continue  # SAM2 skips the backward pass of an object prompted on frame 0
                result = _step(model, track, frame, reverse, stop_when_absent, window)
                if result is not None:
                    yield result
        for track in tracks.values():
            track.stopped = False
