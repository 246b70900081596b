"""CLI: `samadapt finetune-memory` (train SAM2's memory path on clips of consecutive slices)."""

from __future__ import annotations

from pathlib import Path

import typer

from samadapt.finetune.memory_config import MEMORY_INIT, MEMORY_MODEL, MemoryTrainConfig
from samadapt.modeling.sources import init_help
from samadapt.options import config_option


def finetune_memory(
    data: Path = typer.Option(..., "--data", help="Labelled 3D dataset: description file or folder."),
    splits: Path = typer.Option(..., "--splits", help="splits.json from `samadapt data split`."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (model/, checkpoints/, train.csv, summary.json)."),
    fold: int = config_option(MemoryTrainConfig, "fold", help="Cross-validation fold to train (its val part validates)."),
    model: str | None = config_option(MemoryTrainConfig, "model", "-m", help=f"SAM2/SAM2.1 variant (see `samadapt models`; default: the variant of the --init weights, else {MEMORY_MODEL})."),
    image_size: int = config_option(MemoryTrainConfig, "image_size", help="Model input size in pixels."),
    init: str = config_option(MemoryTrainConfig, "init", help=init_help(MEMORY_INIT) + " The weights must include SAM2's memory; ckpt:RUN continues from a finetune-memory run."),
    clip_length: int = config_option(MemoryTrainConfig, "clip_length", help="Consecutive slices per clip, the first one prompted (at least 2)."),
    prompt: str = config_option(MemoryTrainConfig, "prompt", help="Prompt on each clip's key slice: mask (its reference mask) or box (the mask's bounding box)."),
    epochs: int = config_option(MemoryTrainConfig, "epochs"),
    batch_size: int = config_option(MemoryTrainConfig, "batch_size", help="Clips per optimiser step."),
    lr: float = config_option(MemoryTrainConfig, "lr", help="Learning rate of the memory path and mask decoder."),
    weight_decay: float = config_option(MemoryTrainConfig, "weight_decay"),
    grad_clip: float = config_option(MemoryTrainConfig, "grad_clip", help="Clip the gradient norm to this value (0: off)."),
    repeat: int = config_option(MemoryTrainConfig, "repeat", help="Clips per training volume and class in each epoch."),
    seed: int = config_option(MemoryTrainConfig, "seed"),
    keep: str = config_option(MemoryTrainConfig, "keep", help="Model to save: best (by validation clip Dice) or last."),
    resume: bool = config_option(MemoryTrainConfig, "resume", help="Continue the run in --out from its last checkpoint."),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for torch."),
) -> None:
    """Train SAM2's memory path (image encoder frozen) on clips of consecutive slices prompted on a key slice."""
    import torch

    from samadapt.errors import UserError
    from samadapt.finetune.memory_training import train_memory
    from samadapt.outcome import finish_training

    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads}: must be at least 1")
    if threads:
        torch.set_num_threads(threads)
    config = MemoryTrainConfig(
        data=str(data), splits=str(splits), out=str(out), fold=fold, model=model, image_size=image_size, init=init,
        clip_length=clip_length, prompt=prompt, epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, grad_clip=grad_clip, repeat=repeat, seed=seed, keep=keep, resume=resume,
    )
    config.validate()
    result = train_memory(config)
    finish_training(result, out, ["propagate", "--init", f"ckpt:{out}", "--input", "VOLUME", "--labels", "KEY_LABELS",
                                  "--out", "SEGMENTATION.nii.gz"], epochs=epochs)
