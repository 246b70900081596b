"""`samadapt models`: list the model variants this toolkit can build and load."""

from __future__ import annotations

import typer

from samadapt.modeling.sources import HF_PAGE, SAM2_RELEASE_PAGE, SAM_RELEASE_PAGE


def _count_parameters(name: str) -> int:
    """Parameters of the image-segmentation model (random init on the meta device: no memory)."""
    import torch

    from samadapt.modeling.registry import build_hf_model

    with torch.device("meta"):
        model = build_hf_model(name)
    return sum(p.numel() for p in model.parameters())


# Printed under the table: without downloaded weights every variant is random and untrained.
WEIGHTS_NOTE = (
    "\nNothing is downloaded: without --init sam2:PATH every model has random, untrained weights.\n"
    f"SAM2/SAM2.1 .pt files: {SAM2_RELEASE_PAGE} (checkpoints section); SAM .pth files: {SAM_RELEASE_PAGE}.\n"
    f"Hugging Face folders: {HF_PAGE}/facebook/<name>, e.g. {HF_PAGE}/facebook/sam2.1-hiera-tiny\n"
    "(download with `hf download facebook/sam2.1-hiera-tiny --local-dir sam2.1-hiera-tiny`).\n"
    "Use either with --init sam2:PATH, e.g. `samadapt predict --init sam2:sam2.1_hiera_tiny.pt ...`\n"
    "(predict reads the variant from the weights; the other commands need --model sam2.1-hiera-tiny too)."
)


def register(app: typer.Typer) -> None:
    app.command("models")(models)


def models(
    family: str = typer.Option(None, "--family", help="Only this family: sam2 or sam."),
    no_params: bool = typer.Option(False, "--no-params", help="Skip counting parameters (faster)."),
) -> None:
    """List model variants: name, family, parameters, default image size, Meta's checkpoint file.

    Any variant runs at any input size that is a multiple of 32 (SAM2) or 16 (SAM);
    official checkpoints load at any such size.
    """
    from samadapt.errors import UserError
    from samadapt.modeling.registry import REGISTRY, list_models

    if family is not None and family not in ("sam2", "sam"):
        raise UserError(f"--family must be sam2 or sam, got {family!r}")
    rows = [("name", "family", "params", "default size", "Meta checkpoint")]
    for name in list_models(family):
        spec = REGISTRY[name]
        params = "-" if no_params else f"{_count_parameters(name) / 1e6:.1f}M"
        rows.append((name, spec.family, params, str(spec.default_image_size), spec.meta_checkpoint))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(WEIGHTS_NOTE)
