"""CLI: `samadapt baseline nnunet` (nnU-Net v2 on a samadapt split, scored in samadapt's harness)."""

from __future__ import annotations

from pathlib import Path

import typer

from samadapt.baselines.config import NnunetConfig
from samadapt.options import config_option

baseline_app = typer.Typer(help="Baselines from other frameworks, trained and scored on samadapt's splits.",
                           no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(baseline_app, name="baseline")


@baseline_app.command("nnunet")
def nnunet(
    data: Path = typer.Option(..., "--data", help="Labelled dataset: description file or folder."),
    splits: Path = typer.Option(..., "--splits", help="splits.json from `samadapt data split`."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (summary.json, predictions/, eval/, nnunet/); must be new or empty."),
    fold: int = config_option(NnunetConfig, "fold", help="Fold whose train part nnU-Net trains on."),
    part: str = config_option(NnunetConfig, "part", help="Part of the splits to predict and score: test, or val (the fold's held-out cases in cross-validation)."),
    configuration: str = config_option(NnunetConfig, "configuration", help="nnU-Net configuration: 2d or 3d_fullres (3D datasets)."),
    epochs: int = config_option(NnunetConfig, "epochs", help="Training epochs (nnU-Net's default is 1000; recorded in the run)."),
    iterations_per_epoch: int = config_option(NnunetConfig, "iterations_per_epoch", help="Training iterations per epoch (nnU-Net's default is 250)."),
    device: str = config_option(NnunetConfig, "device", help="cpu or cuda."),
    seed: int = config_option(NnunetConfig, "seed"),
    threads: int | None = config_option(NnunetConfig, "threads", help="CPU threads for torch in nnU-Net's process."),
    mirroring: bool = typer.Option(NnunetConfig.mirroring, "--mirroring/--no-mirroring", help="nnU-Net's mirroring augmentation and test-time mirroring (its default); --no-mirroring for classes defined by their side, e.g. left/right lung (nnU-Net flips without swapping labels)."),
    image_size: int | None = config_option(NnunetConfig, "image_size", help="2D only: resample each image so its longer side is this many pixels before nnU-Net sees it (the size the other models of a comparison train at); predictions are resampled back to each case's size. Default: native size."),
) -> None:
    """Train nnU-Net v2 on one fold (its own planning, preprocessing and trainer, shortened to
    --epochs x --iterations-per-epoch), predict --part and score it like every samadapt model.

    Needs nnunetv2, samadapt's optional `nnunet` extra. `samadapt compare` takes the run folder.
    """
    from samadapt.baselines.nnunet import run_nnunet
    from samadapt.outcome import command_line, print_outcome

    config = NnunetConfig(data=str(data), splits=str(splits), out=str(out), fold=fold, part=part,
                          configuration=configuration, epochs=epochs, iterations_per_epoch=iterations_per_epoch,
                          device=device, seed=seed, threads=threads, image_size=image_size, mirroring=mirroring)
    summary = run_nnunet(config)
    dice = summary["dice"]
    print_outcome(f"finished ({epochs} epochs x {iterations_per_epoch} iterations)",
                  f"{part} Dice {dice['mean']:.4f}" + (f" ± {dice['sd']:.4f}" if dice.get("sd") is not None else ""),
                  out, command_line(["compare", "OTHER_RUN", out, "--out", "compare"]))
