"""CLI: `samadapt pretrain` (MAE pre-training of the SAM2 image encoder on unlabeled images)."""

from __future__ import annotations

from pathlib import Path

import typer

from samadapt.modeling.sources import init_help
from samadapt.options import config_option, default_of, devices_option
from samadapt.pretrain.config import DEFAULT_WARMUP_EPOCHS, PretrainConfig


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain)


def pretrain(
    data: list[str] = typer.Option(..., "--data", help="Folder of images (searched recursively), image/NIfTI file, or dataset description; repeat for several."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoints, metrics, recon/ pictures, and encoder/ at the end."),
    model: str = config_option(PretrainConfig, "model", "-m", help="SAM2 variant (see `samadapt models`)."),
    image_size: int = config_option(PretrainConfig, "image_size", help="Training input size in pixels, a multiple of 32 (the mask unit)."),
    init: str = config_option(PretrainConfig, "init", help=init_help()),
    mask_ratio: float = config_option(PretrainConfig, "mask_ratio", help="Fraction of 32x32-pixel units hidden, strictly between 0 and 1."),
    path: str = config_option(PretrainConfig, "path", help="sparse: the encoder sees only visible units (fast); dense: mask tokens, full grid."),
    norm_pix: bool = typer.Option(default_of(PretrainConfig, "norm_pix"), "--norm-pix/--no-norm-pix", help="Reconstruct each 16-px patch normalised by its own mean and std (MAE's default), or raw pixels."),
    epochs: int = config_option(PretrainConfig, "epochs", help="Training epochs (may be raised when resuming)."),
    batch_size: int = config_option(PretrainConfig, "batch_size", help="Images per step (per process under torchrun)."),
    lr: float = config_option(PretrainConfig, "lr", help="Peak AdamW learning rate."),
    weight_decay: float = config_option(PretrainConfig, "weight_decay", help="AdamW weight decay (not on biases, norms, embeddings)."),
    warmup_epochs: float | None = config_option(PretrainConfig, "warmup_epochs", help=f"Linear warm-up before the cosine decay, in epochs (default: {DEFAULT_WARMUP_EPOCHS:g}, or all of a shorter run)."),
    grad_clip: float = config_option(PretrainConfig, "grad_clip", help="Clip the gradient norm to this value (0: off)."),
    grad_accumulation: int = config_option(PretrainConfig, "grad_accumulation", help="Sum the gradients of N batches into one optimiser step (global batch = batch size x devices x N)."),
    seed: int = config_option(PretrainConfig, "seed", help="Seed for weights, data order and masks."),
    checkpoint_every: int = config_option(PretrainConfig, "checkpoint_every", help="Also save a resumable checkpoint every N steps (0: only per epoch)."),
    recon_every: int = config_option(PretrainConfig, "recon_every", help="Write recon/epoch-XXXX.png every K epochs and at the end (0: never)."),
    workers: int = config_option(PretrainConfig, "num_workers", help="Data loader worker processes."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its latest checkpoint (same settings)."),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice)."),
    devices: int | None = devices_option(),
) -> None:
    """Pre-train the SAM2 image encoder as a masked autoencoder on unlabeled images.

    The result, OUT/encoder, is a samadapt checkpoint; fine-tune from it with `--init mae:OUT`.
    """
    from samadapt.cli import relaunch_on_devices
    from samadapt.engine.run_folder import dataset_inputs, train_in_run_folder
    from samadapt.errors import UserError
    from samadapt.modeling.sources import parse_init
    from samadapt.outcome import finish_training
    from samadapt.pretrain.train import run_pretrain

    if (code := relaunch_on_devices(devices)) is not None:
        raise typer.Exit(code)
    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads}: must be at least 1")
    parse_init(init, command="pretrain")  # a misspelt --init fails before the images are read
    if threads:
        import torch

        torch.set_num_threads(threads)
    config = PretrainConfig(
        data=[str(d) for d in data], out=str(out), model=model, image_size=image_size, init=init,
        mask_ratio=mask_ratio, path=path, norm_pix=norm_pix, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        warmup_epochs=warmup_epochs, grad_clip=grad_clip, grad_accumulation=grad_accumulation, seed=seed, checkpoint_every=checkpoint_every,
        recon_every=recon_every, num_workers=workers,
    )
    summary = train_in_run_folder(out, [p for d in data for p in dataset_inputs(d)],
                                  lambda: run_pretrain(config, resume=resume))
    # fine-tuning needs labelled data, which pre-training never saw: those two stay for the user to fill in
    variant = [] if model == PretrainConfig.model else ["--model", model]
    finish_training(summary, out, ["finetune", "--data", "LABELLED_DATA", "--splits", "SPLITS_JSON", *variant,
                                   "--init", f"mae:{out}", "--out", "FINETUNE_RUN"], epochs=epochs)
