"""CLI: `samadapt finetune` (train a segmentation model on a split), `samadapt ablate-loss`, and
`samadapt finetune-memory` (train SAM2's memory path on clips of consecutive slices)."""

from __future__ import annotations

from pathlib import Path

import typer

from samadapt.finetune.config import FinetuneConfig
from samadapt.finetune.memory_config import MEMORY_INIT, MEMORY_MODEL, MemoryTrainConfig
from samadapt.modeling.sources import init_help, parse_init
from samadapt.options import config_option, default_of, devices_option, flag


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)
    app.command("ablate-loss")(ablate_loss)
    app.command("finetune-memory")(finetune_memory)


def _optional_positive(name: str, value: int | None) -> int | None:
    from samadapt.errors import UserError

    if value is not None and value < 1:
        raise UserError(f"{name} {value}: must be at least 1")
    return value


def finetune(
    data: Path = typer.Option(..., "--data", help="Labelled dataset: description file or folder."),
    splits: Path = typer.Option(..., "--splits", help="splits.json from `samadapt data split`."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (model/, checkpoints/, curves, summary.json)."),
    fold: int = config_option(FinetuneConfig, "fold", help="Cross-validation fold to train (its val part validates)."),
    model: str = config_option(FinetuneConfig, "model", "-m", help="Segment Anything variant (see `samadapt models`), or unet / attention-unet."),
    image_size: int = config_option(FinetuneConfig, "image_size", help="Model input size in pixels."),
    init: str = config_option(FinetuneConfig, "init", help=init_help()),
    loss: str = config_option(FinetuneConfig, "loss", help="Loss spec, e.g. dice+bce, 0.8*dice+0.2*focal, tversky(alpha=0.3,beta=0.7)."),
    train: str = config_option(FinetuneConfig, "train", help="What trains: all, decoder (prompts + mask decoder), encoder-decoder, or lora (LoRA adapters on the encoder + prompts + mask decoder)."),
    lora_rank: int = config_option(FinetuneConfig, "lora_rank", help="--train lora: rank of each adapter."),
    lora_alpha: float = config_option(FinetuneConfig, "lora_alpha", help="--train lora: adapter scale is alpha / rank."),
    lora_targets: str = config_option(FinetuneConfig, "lora_targets", help="--train lora: trunk layers that get adapters: qkv, proj, mlp (comma-separated), or module-name endings."),
    lora_decoder: bool = typer.Option(default_of(FinetuneConfig, "lora_decoder"), "--lora-decoder/--no-lora-decoder", help="--train lora: adapters on the mask decoder's transformer too (its own weights then stay frozen; its output head trains)."),
    freeze_stages: int = config_option(FinetuneConfig, "freeze_stages", help="encoder-decoder: keep the trunk's first N stages frozen."),
    epochs: int = config_option(FinetuneConfig, "epochs"),
    batch_size: int = config_option(FinetuneConfig, "batch_size"),
    lr: float = config_option(FinetuneConfig, "lr", help="Learning rate of the decoder and class prompts."),
    recipe: str = config_option(FinetuneConfig, "recipe", help="How the encoder trains: scratch (all at --lr), pretrained (layer-wise lr decay, encoder at half --lr, 10% warm-up) or auto (pretrained unless --init random). See docs/finetune.md."),
    encoder_lr: float | None = config_option(FinetuneConfig, "encoder_lr", help="Base learning rate of the image encoder (default: from --recipe)."),
    layer_decay: float | None = config_option(FinetuneConfig, "layer_decay", help="Layer-wise lr decay in (0, 1], 1 = none (default: from --recipe)."),
    warmup_fraction: float | None = config_option(FinetuneConfig, "warmup_fraction", help="Linear warm-up, as a fraction of all steps (default: from --recipe)."),
    weight_decay: float = config_option(FinetuneConfig, "weight_decay"),
    grad_clip: float = config_option(FinetuneConfig, "grad_clip", help="Clip the gradient norm to this value (0: off)."),
    grad_accumulation: int = config_option(FinetuneConfig, "grad_accumulation", help="Sum the gradients of N batches into one optimiser step (global batch = batch size x devices x N)."),
    tokens_per_class: int = config_option(FinetuneConfig, "tokens_per_class", help="Learned prompt tokens per class."),
    prompt: str = config_option(FinetuneConfig, "prompt", help="Also train with prompts simulated from the masks: none, box or points."),
    presence: bool = typer.Option(default_of(FinetuneConfig, "presence"), "--presence/--no-presence", help="SAM2: train the object-score head to say whether each class is in the image; absent classes then predict an empty mask."),
    augment: bool = typer.Option(default_of(FinetuneConfig, "augment"), "--augment/--no-augment"),
    repeat: int = config_option(FinetuneConfig, "repeat", help="Show the training cases this many times per epoch (tiny data sets)."),
    seed: int = config_option(FinetuneConfig, "seed"),
    patience: int | None = config_option(FinetuneConfig, "patience", help="Stop after this many epochs without a better val Dice."),
    keep: str = config_option(FinetuneConfig, "keep", help="Model to save: best (by val Dice) or last (fixed budget; honest cross-validation)."),
    precision: str = config_option(FinetuneConfig, "precision", help="auto (bf16 on GPUs that have it, else fp32), fp32, bf16 (also on CPU: faster with bf16 units, see docs/benchmarks.md) or fp16 (GPU)."),
    workers: int = config_option(FinetuneConfig, "num_workers", help="Data loader worker processes."),
    resume: bool = config_option(FinetuneConfig, "resume", help="Continue the run in --out from its last checkpoint."),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for torch."),
    devices: int | None = devices_option(),
) -> None:
    """Fine-tune a model for prompt-free multi-class segmentation; saves the best model by validation Dice."""
    import torch

    from samadapt.cli import relaunch_on_devices
    from samadapt.engine.run_folder import dataset_inputs, train_in_run_folder
    from samadapt.finetune.training import finetune as run_finetune
    from samadapt.outcome import finish_training

    if (code := relaunch_on_devices(devices)) is not None:
        raise typer.Exit(code)
    _optional_positive("--threads", threads)
    if threads:
        torch.set_num_threads(threads)
    parse_init(init, command="finetune")
    config = FinetuneConfig(
        data=str(data), splits=str(splits), out=str(out), fold=fold, model=model, image_size=image_size, init=init,
        loss=loss, train=train, lora_rank=lora_rank, lora_alpha=lora_alpha, lora_targets=lora_targets,
        lora_decoder=lora_decoder, freeze_stages=freeze_stages, epochs=epochs, batch_size=batch_size, lr=lr,
        recipe=recipe, encoder_lr=encoder_lr, layer_decay=layer_decay, warmup_fraction=warmup_fraction,
        weight_decay=weight_decay, grad_clip=grad_clip, grad_accumulation=grad_accumulation, tokens_per_class=tokens_per_class, prompt=prompt, presence=presence, augment=augment, repeat=repeat, seed=seed, patience=patience,
        keep=keep, precision=precision, num_workers=workers, resume=resume,
    )
    config.validate()
    result = train_in_run_folder(out, [*dataset_inputs(data), splits], lambda: run_finetune(config))
    finish_training(result, out, ["evaluate", "--model", out, "--data", data, "--splits", splits,
                                  "--part", _scored_part(splits)], epochs=epochs)


def _scored_part(splits: Path) -> str:
    """The part to evaluate a finished run on: test, or val when the splits have no test part."""
    import json

    try:
        return "test" if json.loads(splits.read_text())["test"]["cases"] else "val"
    except (OSError, ValueError, KeyError, TypeError):  # already validated by training; never fail here
        return "test"


def ablate_loss(
    data: Path = typer.Option(..., "--data", help="Labelled dataset: description file or folder."),
    splits: Path = typer.Option(..., "--splits", help="splits.json from `samadapt data split`."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for one run per loss and folds, and ablation.{md,csv,json}."),
    folds: str = typer.Option("0", "--folds", help="Comma-separated folds to train, or 'all'."),
    losses: str | None = typer.Option(None, "--losses", help="Comma-separated loss presets (default: every preset)."),
    model: str = config_option(FinetuneConfig, "model", "-m"),
    image_size: int = config_option(FinetuneConfig, "image_size"),
    init: str = config_option(FinetuneConfig, "init", help=init_help()),
    train: str = config_option(FinetuneConfig, "train"),
    epochs: int = config_option(FinetuneConfig, "epochs"),
    batch_size: int = config_option(FinetuneConfig, "batch_size"),
    lr: float = config_option(FinetuneConfig, "lr"),
    encoder_lr: float | None = config_option(FinetuneConfig, "encoder_lr"),
    seed: int = config_option(FinetuneConfig, "seed"),
    patience: int | None = config_option(FinetuneConfig, "patience"),
    keep: str = config_option(FinetuneConfig, "keep", help="best (by val Dice; the splits' test part is then scored) or last. Without a test part the val parts are scored and last is kept."),
    repeat: int = config_option(FinetuneConfig, "repeat", help="Show the training cases this many times per epoch."),
    threads: int | None = typer.Option(None, "--threads"),
) -> None:
    """Train the same setup once per loss preset (same split, budget and seed) and tabulate Dice and IoU."""
    import torch

    from samadapt.finetune.ablation import run_loss_ablation

    _optional_positive("--threads", threads)
    if threads:
        torch.set_num_threads(threads)
    parse_init(init, command="ablate-loss")
    base = FinetuneConfig(data=str(data), splits=str(splits), out=str(out), model=model, image_size=image_size,
                          init=init, train=train, epochs=epochs, batch_size=batch_size, lr=lr,
                          encoder_lr=encoder_lr, seed=seed, patience=patience, keep=keep, repeat=repeat)
    base.validate()
    table = run_loss_ablation(base, out, folds=folds, losses=losses)
    for row in table["rows"]:
        print(f"{row['loss']:>14}: Dice {row['dice_mean']:.4f} ± {row['dice_sd']:.4f}, "
              f"IoU {row['iou_mean']:.4f} ± {row['iou_sd']:.4f} ({row['n']} cases)")
    _ablation_outcome(base, table, out)


def _ablation_outcome(base, table: dict, out: Path) -> None:
    """The closing lines: the best loss by mean Dice, and the fine-tuning run it suggests."""
    import math

    from samadapt.outcome import exit_interrupted, print_outcome, resume_command

    ranked = sorted((r for r in table["rows"] if not math.isnan(r["dice_mean"])), key=lambda r: -r["dice_mean"])
    best = (f"{ranked[0]['loss']} Dice {ranked[0]['dice_mean']:.4f} ± {ranked[0]['dice_sd']:.4f} on the "
            f"{table['part']} part (checkpoint kept: {table['keep']})" if ranked else "none (no loss scored)")
    if table["status"] == "interrupted":  # running the same command again resumes where it stopped
        print_outcome("interrupted", best, out, resume_command(resume_flag=False))
        exit_interrupted()
    else:
        status = f"completed ({len(table['rows'])} losses, folds {','.join(map(str, table['folds']))})"
        print_outcome(status, best, out, _finetune_with(base, ranked[0]["loss"], out) if ranked
                      else f"cat {out / 'ablation.md'}")


# what the ablation fixed besides the loss, as `finetune` flags: the next run repeats them
CARRIED_FIELDS = ("model", "image_size", "init", "train", "epochs", "batch_size", "lr", "encoder_lr", "seed",
                  "patience", "keep", "repeat")


def _finetune_with(base, preset: str, out: Path) -> str:
    """The `finetune` command that trains the winning loss with the ablation's other settings."""
    from dataclasses import fields

    from samadapt.finetune.losses import LOSS_PRESETS
    from samadapt.outcome import command_line

    defaults = {f.name: f.default for f in fields(base)}
    words = ["finetune", "--data", base.data, "--splits", base.splits, "--loss", LOSS_PRESETS[preset]]
    for name in CARRIED_FIELDS:
        if getattr(base, name) != defaults.get(name):
            words += [flag(name), getattr(base, name)]
    return command_line([*words, "--out", out.parent / f"{out.name}-{preset}"])


def finetune_memory(
    data: Path = typer.Option(..., "--data", help="Labelled 3D dataset: description file or folder."),
    splits: Path = typer.Option(..., "--splits", help="splits.json from `samadapt data split`."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (model/, checkpoints/, train.csv, summary.json)."),
    fold: int = config_option(MemoryTrainConfig, "fold", help="Cross-validation fold to train (its val part validates)."),
    model: str | None = config_option(MemoryTrainConfig, "model", "-m", help=f"SAM2/SAM2.1 variant (see `samadapt models`; default: the variant of the --init weights, else {MEMORY_MODEL})."),
    image_size: int = config_option(MemoryTrainConfig, "image_size", help="Model input size in pixels."),
    init: str = config_option(MemoryTrainConfig, "init", help=init_help(MEMORY_INIT) + " The weights must include SAM2's memory; ckpt:RUN continues from a finetune-memory run; mae:RUN starts from an MAE run's encoder with a random memory half."),
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
    devices: int | None = devices_option(),
) -> None:
    """Train SAM2's memory path (image encoder frozen) on clips of consecutive slices prompted on a key slice."""
    import torch

    from samadapt.cli import relaunch_on_devices
    from samadapt.engine.run_folder import dataset_inputs, train_in_run_folder
    from samadapt.finetune.memory_training import train_memory
    from samadapt.outcome import finish_training

    if (code := relaunch_on_devices(devices)) is not None:
        raise typer.Exit(code)
    _optional_positive("--threads", threads)
    if threads:
        torch.set_num_threads(threads)
    config = MemoryTrainConfig(
        data=str(data), splits=str(splits), out=str(out), fold=fold, model=model, image_size=image_size, init=init,
        clip_length=clip_length, prompt=prompt, epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, grad_clip=grad_clip, repeat=repeat, seed=seed, keep=keep, resume=resume,
    )
    config.validate()
    result = train_in_run_folder(out, [*dataset_inputs(data), splits], lambda: train_memory(config))
    finish_training(result, out, ["propagate", "--init", f"ckpt:{out}", "--input", "VOLUME", "--labels", "KEY_LABELS",
                                  "--out", "SEGMENTATION.nii.gz"], epochs=epochs)
