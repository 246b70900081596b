"""CLI: `samadapt studio FOLDER`, a local web app on the folder's images and volumes."""

from __future__ import annotations

from pathlib import Path

import typer

from samadapt.modeling.sources import init_help
from samadapt.options import config_option
from samadapt.studio.config import StudioConfig

# Prompts need a trained mask decoder: an MAE run has none (as for `fewshot baseline`).
STUDIO_INIT = ("random", "sam2", "hf", "ckpt")
NO_TRAINED_DECODER = {"mae": "a pre-training run's mask decoder never trained, so prompts mean nothing"}


def register(app: typer.Typer) -> None:
    app.command("studio")(studio)


def studio(
    folder: Path = typer.Argument(..., help="Folder of images and/or volumes (NIfTI, NRRD, MHA, DICOM); "
                                  "the studio keeps its state in FOLDER/.samadapt-studio/."),
    data: Path | None = typer.Option(None, "--data", help="Dataset description to show instead of FOLDER's files "
                                     "(its reference labels and classes); default: FOLDER's own dataset.yaml if any."),
    model: str = config_option(StudioConfig, "model", "-m", help="Model name (see `samadapt models`)."),
    init: str = config_option(StudioConfig, "init", help=init_help(STUDIO_INIT)),
    image_size: int = config_option(StudioConfig, "image_size", help="Model input size in pixels."),
    classes: str = config_option(StudioConfig, "classes", help="Comma-separated class names when FOLDER has no "
                                 "dataset description."),
    epochs: int = config_option(StudioConfig, "epochs", help="Decoder training epochs per train click."),
    host: str = config_option(StudioConfig, "host", help="Address to listen on (another than 127.0.0.1 "
                              "exposes the studio to the network)."),
    port: int = config_option(StudioConfig, "port", help="Port to listen on (0: any free port)."),
    max_upload_mb: int = config_option(StudioConfig, "max_upload_mb", help="Largest request body accepted."),
) -> None:
    """Look at images and volumes, prompt SAM2, correct labels and retrain the few-shot decoder, in a browser."""
    from samadapt.cli import invoked_args
    from samadapt.errors import UserError, require_module
    from samadapt.modeling.registry import get_spec
    from samadapt.modeling.sources import parse_init, warn_random_weights, weights_path

    config = StudioConfig(model=model, init=init, image_size=image_size, classes=classes, epochs=epochs,
                          host=host, port=port, max_upload_mb=max_upload_mb)
    config.validate()
    if not folder.is_dir():
        raise UserError("studio folder not found" if not folder.exists() else "not a folder", folder)
    if data is not None and not data.exists():
        raise UserError("dataset description not found", data)
    get_spec(model).check_image_size(image_size)
    weights = weights_path(parse_init(init, STUDIO_INIT, command="studio", reasons=NO_TRAINED_DECODER))
    require_module("fastapi", "studio", "samadapt studio")
    require_module("uvicorn", "studio", "samadapt studio")
    from samadapt.studio.server import bind, serve
    from samadapt.studio.session import Studio

    bind(host, port).close()  # a port in use fails before the folder is scanned
    session = Studio(folder, config, weights, data, debug="--debug" in invoked_args())
    if weights is None:
        warn_random_weights(model, "prompt masks and predictions")
    serve(session, host, port)
