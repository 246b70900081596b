"""`samadapt finetune-memory`: train SAM2's memory path (memory attention, memory encoder, object
pointers, mask decoder; the image encoder frozen) on clips of consecutive slices, MedSAM2-style.

Each clip is prompted on its first slice (the reference mask there, or its box) and tracked
through the rest with the memory; the loss is Dice + BCE of every tracked slice's mask plus BCE of
its object score (present or not), so that propagation also learns where a structure ends. The
shared trainer runs it (checkpoints, resume, train.csv, Ctrl-C safe); validation tracks fixed clips
of the validation volumes and scores their 3D Dice.

Layout of RUN_DIR: config.json, model/ (a samadapt model folder holding the whole video model:
`samadapt propagate --init ckpt:RUN_DIR` loads it strictly), checkpoints/ (trainable parameters
only: the frozen encoder is rebuilt from --init), train.csv, epoch.csv, curves.png, summary.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from samadapt.engine.curves import CurvePlot
from samadapt.errors import UserError
from samadapt.finetune.memory_config import MEMORY_INIT, MEMORY_MODEL, MemoryTrainConfig
from samadapt.options import flag

VAL_METRIC = "val_dice"


def clip_loss(loss_fn, output, item: dict, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(segmentation loss, object-score loss) of one clip over its supervised slices: all but the
    first when the prompt is its mask (the model passes that mask through unchanged)."""
    first = 1 if prompt == "mask" else 0
    logits = output.logits[first:].float().unsqueeze(1)  # (T', 1, S, S)
    target = item["targets"][first:].unsqueeze(1)
    present = target.flatten(1).amax(dim=1)  # (T',) 1 where the object shows
    segmentation = loss_fn(logits, target)
    score = torch.nn.functional.binary_cross_entropy_with_logits(output.scores[first:].float(), present)
    return segmentation, score


def _clip_prompt(item: dict):
    from samadapt.modeling.memory_training import ClipPrompt

    return ClipPrompt(mask=item.get("mask"), points=item.get("points"), labels=item.get("labels"))


def memory_step_fn(loss_fn, prompt: str):
    """The trainer's step: the mean loss of a batch (list) of clips."""

    def step_fn(net, batch):
        seg_total, score_total = 0.0, 0.0
        outputs = net([(item["frames"], _clip_prompt(item)) for item in batch])
        for item, output in zip(batch, outputs):
            segmentation, score = clip_loss(loss_fn, output, item, prompt)
            seg_total, score_total = seg_total + segmentation, score_total + score
        n = len(batch)
        loss = (seg_total + score_total) / n
        return loss, {"mask_loss": float(seg_total.detach()) / n, "score_loss": float(score_total.detach()) / n}, n

    return step_fn


def clip_dice(net, clips) -> dict[str, float]:
    """3D Dice of the tracked slices of each fixed clip (prompted slice excluded), averaged."""
    scores = []
    for index in range(len(clips)):
        item = clips[index]
        output = net.track(item["frames"], _clip_prompt(item))
        pred, target = output.logits[1:] > 0, item["targets"][1:] > 0
        total = float(pred.sum() + target.sum())
        scores.append(1.0 if total == 0 else 2.0 * float((pred & target).sum()) / total)
    return {VAL_METRIC: sum(scores) / len(scores)}


def build_memory_trainer_model(config: MemoryTrainConfig):
    """(`MemoryPathTrainer`, the `MemoryModel` it trains, provenance of the starting weights)."""
    from samadapt.modeling.memory_training import MemoryPathTrainer
    from samadapt.modeling.sam2_video import load_memory_model
    from samadapt.modeling.sources import parse_init, weights_path

    source = parse_init(config.init, MEMORY_INIT, command="finetune-memory")
    if source.kind == "mae":  # MAE-SAM2 with a memory: the run's encoder, the memory half from random
        from samadapt.finetune.init import load_mae_encoder
        from samadapt.modeling.model_folder import read_metadata
        from samadapt.modeling.segment_anything import SegmentAnything
        from samadapt.pretrain.export import resolve_encoder_dir

        pretrained = read_metadata(resolve_encoder_dir(source.path)).get("model")  # the --init weights' variant
        memory = load_memory_model(config.model or pretrained or MEMORY_MODEL, None, config.image_size)
        image = SegmentAnything(memory.hf, name=memory.name, family="sam2", image_size=memory.image_size)
        mae = load_mae_encoder(image, source.path)
        return MemoryPathTrainer(memory.hf), memory, {"init": str(source), "pretraining": mae}
    weights = weights_path(source)
    memory = load_memory_model(config.model or (None if weights else MEMORY_MODEL), weights, config.image_size)
    return MemoryPathTrainer(memory.hf), memory, {"init": str(source), **({"parent": str(weights)} if weights else {})}


def _check_settings(config: MemoryTrainConfig) -> Path:
    from samadapt.engine.atomic import check_output_dir
    from samadapt.modeling.sources import parse_init

    config.validate()
    parse_init(config.init, MEMORY_INIT, command="finetune-memory")
    out = check_output_dir(config.out)
    if not config.resume and (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
        raise UserError(f"run folder already holds checkpoints: add {flag('resume')} or choose a new {flag('out')}", out)
    return out


def _prepare_clips(config: MemoryTrainConfig):
    """(dataset, training clips, validation clips), every data mistake a UserError before any model work."""
    from samadapt.finetune.memory_clips import VolumeClips, load_clip_volumes
    from samadapt.finetune.training import prepare_data

    dataset, _, train_cases, val_cases = prepare_data(config)
    if dataset.spec.dims != "3d":
        raise UserError("the dataset is 2D (dims: 2d); memory training needs volumes", config.data)
    train = VolumeClips(load_clip_volumes(train_cases, config.image_size), config.clip_length, config.prompt,
                        seed=config.seed, repeat=config.repeat)
    val = VolumeClips(load_clip_volumes(val_cases, config.image_size), config.clip_length, config.prompt,
                      fixed=True)
    return dataset, train, val


def _build_trainer(config: MemoryTrainConfig, model, train_clips, val_clips, out: Path):
    from samadapt.engine.schedule import adamw, cosine_with_warmup
    from samadapt.engine.trainer import Checkpoints, Reporting, Schedule, TrainData, Trainer, Validation
    from samadapt.finetune.losses import parse_loss
    from samadapt.finetune.memory_clips import collate_clips

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(trainable, lr=config.lr, weight_decay=config.weight_decay)
    batch = min(config.batch_size, len(train_clips))
    return Trainer(
        model, memory_step_fn(parse_loss("dice+bce"), config.prompt), optimizer,
        TrainData(train_clips, batch_size=batch, collate_fn=collate_clips), run_dir=out,
        schedule=Schedule(lambda opt, total: cosine_with_warmup(opt, total, warmup_steps=max(1, total // 20)),
                          grad_clip=config.grad_clip, precision="fp32", seed=config.seed),
        validation=Validation(lambda net: clip_dice(net, val_clips), monitor=VAL_METRIC, mode="max"),
        checkpoints=Checkpoints(resume=config.resume, meta=config.run_settings(), trainable_only=True),
        reporting=Reporting(progress=config.progress, callbacks=[CurvePlot(("train_loss", VAL_METRIC))]),
        # which parameters a clip uses depends on its prompt (a mask prompt skips the decoder on
        # the key slice), and the IoU head never gets a gradient
        ddp_kwargs={"find_unused_parameters": True},
    )


def train_memory(config: MemoryTrainConfig) -> dict:
    """Train as `config` says; returns the summary also written to RUN_DIR/summary.json."""
    from samadapt.engine.distributed import seed_everything

    out = _check_settings(config)
    dataset, train_clips, val_clips = _prepare_clips(config)
    seed_everything(config.seed)  # --seed fixes random starting weights too
    model, memory, provenance = build_memory_trainer_model(config)
    trainer = _build_trainer(config, model, train_clips, val_clips, out)
    train_clips.epoch_source = lambda: trainer.epoch
    if trainer.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(
            {**config.run_settings(), "classes": dataset.class_names,
             "train_cases": [v.case_id for v in train_clips.volumes],
             "val_cases": [v.case_id for v in val_clips.volumes]}, indent=2) + "\n")
    started = time.perf_counter()
    summary = trainer.fit(config.epochs)
    seconds = time.perf_counter() - started
    _keep_selected_weights(config, model, out)
    result = {**summary, "parameters": model.trainable_counts(), "seconds_this_session": seconds,
              "model_dir": str(out / "model"), "clips_per_epoch": len(train_clips)}
    if trainer.is_main:
        save_memory_model(memory, out / "model", {**provenance, "command": "finetune-memory", "data": config.data,
                                                  "splits": config.splits, "fold": config.fold,
                                                  "clip_length": config.clip_length, "prompt": config.prompt,
                                                  "best": summary["best"], "kept": config.keep})
        (out / "summary.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def _keep_selected_weights(config: MemoryTrainConfig, model, out: Path) -> None:
    from samadapt.engine import checkpoint as engine_ckpt
    from samadapt.engine.trainer_state import load_model_state

    best = out / "checkpoints" / "best.pt"
    if config.keep == "best" and best.is_file():
        state, _ = engine_ckpt.load_training_state(best)
        load_model_state(model, state["model"], trainable_only=True)


def save_memory_model(memory, folder: Path, provenance: dict) -> Path:
    """The whole video model (image and memory halves) as a samadapt model folder."""
    from types import SimpleNamespace

    from samadapt.modeling.model_folder import save_model_folder

    memory.hf.eval()
    shim = SimpleNamespace(hf=memory.hf, name=memory.name, family="sam2", image_size=memory.image_size)
    return save_model_folder(shim, folder, json.loads(json.dumps(provenance, default=str)),
                             extra_config={"memory": True})
