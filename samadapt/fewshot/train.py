"""Episodic training of the mask decoder + prompter on cached features (the encoder never runs).

Each training step takes a batch of the K shots as queries. For every query, prototypes come from a
random non-empty subset of the *other* shots (the query itself when K = 1), so the decoder learns
to segment an image from prototypes of different images, as it must at inference, and sees
support sets of varying size. The loss (default Dice + BCE, one sigmoid channel per class) is
computed at input resolution on non-padding pixels.

The finished run folder::

    RUN_DIR/support.json      which shots were picked (ids, seed, pool size)
    RUN_DIR/model/            samadapt checkpoint: full model (trained decoder) + extra.safetensors
                              with `prompter.*` weights and the prototypes of all K shots
                              (`prototypes.foreground` (C,P,256), `prototypes.background` (Pb,256)),
                              so prediction needs no support images
    RUN_DIR/checkpoints/, logs  the shared Trainer's resumable state and metric logs
    RUN_DIR/summary.json      how training ended (status, steps, final loss, the shots)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from samadapt.data.preprocess import Letterbox, valid_region
from samadapt.data.volumes import volume_sha256
from samadapt.errors import UserError
from samadapt.options import flag
from samadapt.fewshot.cache import FeatureCache, build_frozen_model
from samadapt.fewshot.config import FewShotConfig  # noqa: F401 (re-exported)
from samadapt.fewshot.items import Item, case_items, item_masks, model_mask
from samadapt.modeling.prototypes import compute_prototypes
from samadapt.modeling.fewshot_segmenter import FewShotSegmenter

RUN_MODEL_DIR = "model"
SUPPORT_FILE = "support.json"
SUMMARY_FILE = "summary.json"
# An epoch on cached features is a few steps, and the state it would save (decoder, prompter and their
# optimiser, ~50 MB for Hiera-T) costs about as much to write as the epoch costs to train; a resume
# repeats at most this many epochs instead.
CHECKPOINT_EVERY_EPOCHS = 10


@dataclass
class SupportSet:
    """The K shots in model geometry: features (K, ...), masks (K, S, S) int64, valid (K, S, S) bool."""

    items: list[Item]
    features: object  # ImageFeatures, batch K
    masks: torch.Tensor
    valid: torch.Tensor
    classes: list[str]

    positions: torch.Tensor | None = None  # (256, h, w) dense positional encoding of the decoder

    def prototypes(self, indices, config: FewShotConfig):
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return compute_prototypes(self.features.embedding[index], self.masks[index], self.valid[index],
                                  len(self.classes), config.prototypes_per_class, config.background_prototypes,
                                  self.classes, positions=self.positions)


def select_shots(cases, classes: list[str], shots: int, seed: int) -> tuple[list[Item], int]:
    """K items picked by `seed` from the labelled cases; returns (items, pool size).

    2D: the pool is every labelled image, and a picked image lacking a class is an error (its
    prototype would be undefined). 3D: the pool is the slices that show every class.
    """
    if shots < 1:
        raise UserError(f"{flag('shots')} {shots}: must be at least 1")
    labelled = [c for c in cases if c.labeled]
    if not labelled:
        raise UserError("the support data has no labelled images")
    pool: list[Item] = []
    for case in labelled:
        if case.dims == "3d":
            masks = item_masks(case, classes)
            pool += [item for item, mask in zip(case_items(case), masks)
                     if all((mask == c).any() for c in range(1, len(classes) + 1))]
        else:
            pool.append(Item(case))
    if shots > len(pool):
        what = "slices showing every class" if labelled[0].dims == "3d" else "labelled images"
        raise UserError(f"{flag('shots')} {shots} is more than the {len(pool)} {what} available for support")
    chosen = sorted(np.random.default_rng(seed).choice(len(pool), size=shots, replace=False).tolist())
    items = [pool[i] for i in chosen]
    for item in items:
        if item.case.dims != "3d":
            mask = item_masks(item.case, classes)[0]
            missing = [name for c, name in enumerate(classes, start=1) if not (mask == c).any()]
            if missing:
                raise UserError(f"support image {item.item_id!r} has no pixel of {', '.join(missing)}: "
                                "every shot must show every class", item.case.mask)
    return items, len(pool)


def load_support(items: list[Item], classes: list[str], cache: FeatureCache) -> SupportSet:
    """Features from the cache (never the encoder) and masks in the cached items' geometry."""
    from samadapt.modeling.segment_anything import ImageFeatures

    size = cache.identity.image_size
    features, masks, valid = [], [], []
    hashes: dict[Path, str] = {}
    for item in items:
        content = hashes.setdefault(item.case.image, volume_sha256(item.case.image))
        cache.check_current(item, content)
        entry = cache.entry(item.item_id)
        box = Letterbox(tuple(entry["original_hw"]), tuple(entry["resized_hw"]), size)
        mask = item_masks(item.case, classes)[item.slice_index or 0]
        if tuple(mask.shape) != box.original_hw:
            raise UserError(f"mask size {mask.shape} differs from the cached image size {box.original_hw}", item.case.mask)
        features.append(cache.load(item.item_id))
        masks.append(model_mask(mask, box))
        valid.append(valid_region(box))
    stacked = {k: torch.cat([f.as_dict()[k] for f in features]) for k in features[0].as_dict()}
    return SupportSet(items, ImageFeatures.from_dict(stacked), torch.stack(masks), torch.stack(valid), classes)


def episode_supports(queries: list[int], shots: int, generator: torch.Generator | None = None) -> list[list[int]]:
    """For each query, a random non-empty subset of the other shots (the query itself if K = 1)."""
    out = []
    for query in queries:
        others = [i for i in range(shots) if i != query]
        if not others:
            out.append([query])
            continue
        size = int(torch.randint(1, len(others) + 1, (1,), generator=generator))
        order = torch.randperm(len(others), generator=generator)[:size].tolist()
        out.append(sorted(others[i] for i in order))
    return out


def make_step_fn(support: SupportSet, config: FewShotConfig):
    from samadapt.finetune.losses import parse_loss

    loss_fn = parse_loss(config.loss)
    size = support.masks.shape[-1]
    num_classes = len(support.classes)

    def step_fn(model: FewShotSegmenter, batch):
        # The support set stays on the CPU (prototypes are cheap there); what the step uses moves
        # to the model's device.
        device = next(model.parameters()).device
        queries = [int(i) for i in batch]
        prototypes = [support.prototypes(s, config).to(device) for s in episode_supports(queries, len(support.items))]
        index = torch.as_tensor(queries)
        logits = model(_select(support.features, index).to(device), prototypes)
        logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
        target = F.one_hot(support.masks[index], num_classes + 1)[..., 1:].permute(0, 3, 1, 2).float().to(device)
        loss = loss_fn(logits, target, support.valid[index].float().to(device))
        return loss, {"loss": float(loss.detach())}, len(queries)

    return step_fn


def _select(features, index: torch.Tensor):
    from samadapt.modeling.segment_anything import ImageFeatures

    return ImageFeatures.from_dict({k: v[index] for k, v in features.as_dict().items()})


def train_fewshot(support_cases, classes: list[str], cache_dir: str | Path, run_dir: str | Path,
                  config: FewShotConfig, *, model_name: str | None = None, image_size: int | None = None,
                  dataset_name: str = "", progress: bool = True, resume: bool = False,
                  inputs: dict | None = None, callbacks=(), model=None,
                  checkpoint_every_epochs: int = CHECKPOINT_EVERY_EPOCHS) -> dict:
    """Pick the shots, train decoder + prompter on their cached features, save the run. Returns a summary.

    `inputs`: the content of the inputs (`engine.provenance.input_hashes`), recorded in the run.
    `callbacks`: `samadapt.engine.callbacks.Callback`s the trainer calls (live progress in the studio).
    `model`: the cache's frozen model, already built (`build_frozen_model` with the cache's weights),
    to train in place instead of building it again (building takes seconds on a CPU).
    `checkpoint_every_epochs`: how often the training state is saved (always after the last epoch)."""
    from samadapt.engine.atomic import atomic_write_text, check_output_dir
    from samadapt.engine.schedule import adamw, adamw_param_groups, cosine_with_warmup
    from samadapt.engine.trainer import Checkpoints, Reporting, Schedule, TrainData, Trainer
    from samadapt.modeling.model_folder import save_model_folder

    config.validate()
    check_output_dir(run_dir)
    cache = FeatureCache(cache_dir)
    cache.check_model(model_name, image_size)
    weights = cache.check_weights()
    items, pool_size = select_shots(support_cases, classes, config.shots, config.seed)
    support = load_support(items, classes, cache)
    identity = cache.identity
    if model is not None and (model.name, model.image_size) != (identity.name, identity.image_size):
        raise ValueError(f"model {model.name} at {model.image_size} px is not the cache's "
                         f"{identity.name} at {identity.image_size} px")
    sam = model if model is not None else build_frozen_model(identity.name, weights, identity.image_size)
    segmenter = FewShotSegmenter(sam)
    with torch.no_grad():
        support.positions = sam.dense_positional_encoding(1)[0].detach().clone()
    optimizer = adamw(adamw_param_groups(segmenter, config.lr, config.weight_decay))
    run_dir = Path(run_dir)
    meta = {"fewshot": asdict(config), "cache_model": identity.to_dict(), "classes": classes,
            "support": [i.item_id for i in items]}
    trainer = Trainer(
        segmenter, make_step_fn(support, config), optimizer,
        TrainData(list(range(len(items))), batch_size=min(config.batch_size, len(items))), run_dir=run_dir,
        schedule=Schedule(lambda opt, total: cosine_with_warmup(opt, total, warmup_steps=min(config.warmup_steps, total // 5)),
                          grad_clip=config.grad_clip or None, seed=config.seed),
        checkpoints=Checkpoints(every_steps=None, every_epochs=checkpoint_every_epochs, keep_last=1, resume=resume,
                                meta=meta),
        reporting=Reporting(progress=progress, tensorboard=False, callbacks=tuple(callbacks), handle_signals=progress),
        ddp_kwargs={"find_unused_parameters": True})  # DDP: SAM's IoU head gets no gradient
    # The trainer moved the segmenter's modules; the frozen model it holds as a plain attribute
    # (prompt encoder, positional encoding) must be on the same device.
    sam.to(trainer.device)
    summary = trainer.fit(epochs=config.epochs)
    if inputs is not None and trainer.is_main and not resume:  # after fit: a refused start writes nothing
        from samadapt.engine.provenance import record_inputs

        record_inputs(run_dir, inputs)
    segmenter.eval()
    with torch.no_grad():
        prototypes = support.prototypes(range(len(items)), config)
    selection = {"dataset": dataset_name, "shots": config.shots, "seed": config.seed, "pool_size": pool_size,
                 "items": [i.item_id for i in items]}
    summary["support"] = selection
    summary["inputs"] = inputs or {}
    if not trainer.is_main:  # under torchrun only rank 0 writes the run folder
        return summary
    atomic_write_text(run_dir / SUPPORT_FILE, json.dumps(selection, indent=1) + "\n")
    extra = {f"prompter.{k}": v for k, v in segmenter.prompter.state_dict().items()}
    extra.update(prototypes.as_tensors())
    first = items[0].case
    save_model_folder(sam, run_dir / RUN_MODEL_DIR,
                    provenance={"command": "fewshot train", "data": dataset_name, "parent": identity.weights or "random"},
                    extra_tensors=extra,
                    extra_config={"fewshot": {**asdict(config), "classes": classes, "support": selection["items"],
                                              "dims": first.dims, "slice_axis": first.slice_axis,
                                              **({"intensity": first.intensity} if first.dims == "3d" else {}),
                                              "cache_model": identity.to_dict(), "inputs": inputs or {}}})
    atomic_write_text(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2, default=str) + "\n")
    return summary
