"""CLI: `samadapt demo`, the whole method, end to end, in one process, ending in an HTML report.

Without `--data` it needs no data and no weights: it generates fluorescein-angiography phantoms,
pre-trains SAM2's image encoder on unlabeled frames as a masked autoencoder, fine-tunes the model
with learned class prompts from random weights and from the pre-trained encoder, scores both on
held-out frames and compares them case by case, then segments anatomy phantoms (2D images and a 3D
volume) from a handful of labelled shots. See docs/method.md for how the pieces fit into SAM2.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Output folder (replaced if it holds an earlier demo)."),
    data: Path | None = typer.Option(None, "--data", help="Your labelled dataset (description file or folder) instead of phantoms."),
    quick: bool = typer.Option(False, "--quick", help="Tiny smoke run (~2 minutes): checks every stage, scores mean nothing."),
    seed: int = typer.Option(0, "--seed", help="Seed for the phantoms, splits, weights and shots."),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice)."),
) -> None:
    """Run the whole method (MAE pre-training, fine-tuning, evaluation, few-shot) and write report.html."""
    from samadapt.demo.run import run_demo
    from samadapt.errors import UserError

    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads {threads}: must be at least 1")
        import torch

        torch.set_num_threads(threads)
    run_demo(out, data=data, quick=quick, seed=seed)
