"""`samadapt demo`: the product's main job on its embedded default data (generated FA phantoms).

Current pipeline: generate labelled FA phantoms -> build SAM2 (Hiera-T) -> segment each frame with a
box prompt around its largest lesion -> write masks and overlays -> score them against the exact
phantom masks. No download and no weights are needed: the model is randomly initialised unless
`--weights` names a checkpoint, so the scores say how far an unadapted model is from the task.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import typer


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def _largest_component_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """xyxy box (pixels) around the largest connected component of a binary mask, or None if empty."""
    from scipy import ndimage

    labels, count = ndimage.label(mask > 0)
    if count == 0:
        return None
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=range(1, count + 1))
    rows, cols = ndimage.find_objects(labels)[int(np.argmax(sizes))]
    return float(cols.start), float(rows.start), float(cols.stop), float(rows.stop)


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Output folder."),
    n_images: int = typer.Option(6, "--n", help="Number of phantom frames to generate and segment."),
    image_size: int = typer.Option(256, "--image-size", help="Model input size (pixels)."),
    weights: Path | None = typer.Option(None, "--weights", "-w", help="Optional SAM2 weights (Meta .pt, HF folder, samadapt checkpoint)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the phantoms and the random model."),
) -> None:
    """Run the end-to-end demo on generated fluorescein-angiography phantoms."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from samadapt.data.io import read_image
    from samadapt.data.phantoms import generate_phantoms
    from samadapt.engine.atomic import atomic_write_text, staged_dir
    from samadapt.errors import UserError
    from samadapt.evaluate.metrics import case_scores
    from samadapt.inference.overlay import overlay_labels
    from samadapt.inference.predict import Prompt, segment
    from samadapt.models.loading import load_model

    if n_images < 1:
        raise UserError(f"--n {n_images}: must be at least 1")
    console = Console()
    started = time.perf_counter()
    torch.manual_seed(seed)
    data_dir = out / "data"
    # The model first: bad --weights or --image-size then fail before anything is written.
    console.print(f"[bold]1/3[/] building sam2-hiera-tiny at {image_size} px"
                  + (f" with weights {weights}" if weights else " (random weights: no download needed)"))
    model = load_model("sam2-hiera-tiny", weights=weights, image_size=image_size).eval()
    console.print(f"[bold]2/3[/] generating {n_images} FA phantom frames in {data_dir}")
    generate_phantoms(data_dir, n=n_images, size=image_size, seed=seed, kind="fa")
    console.print("[bold]3/3[/] segmenting each frame with a box around its largest lesion")
    rows = []
    with staged_dir(out / "predict") as stage:
        for image_path in sorted((data_dir / "images").iterdir()):
            image = read_image(image_path)
            truth = read_image(data_dir / "masks" / image_path.name, keep_indices=True)
            box = _largest_component_box(truth)
            mask = segment(model, image, Prompt(box=box)).astype(np.uint8)
            from PIL import Image

            Image.fromarray(mask * 255).save(stage / f"{image_path.stem}_mask.png")
            Image.fromarray(overlay_labels(image, mask)).save(stage / f"{image_path.stem}_overlay.png")
            scores = case_scores(mask, (truth > 0).astype(np.uint8), labels=[1])[1]
            rows.append({"case": image_path.stem, "prompt": "box" if box else "none",
                         "dice": scores["dice"], "iou": scores["iou"]})
    summary = {"images": len(rows), "mean_dice": float(np.nanmean([r["dice"] for r in rows])),
               "mean_iou": float(np.nanmean([r["iou"] for r in rows])), "cases": rows,
               "weights": str(weights) if weights else "random", "seconds": time.perf_counter() - started}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    table = Table(title="demo: box-prompted SAM2 on FA phantoms")
    for column in ("case", "prompt", "dice", "iou"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["case"], row["prompt"], f"{row['dice']:.3f}", f"{row['iou']:.3f}")
    console.print(table)
    console.print(f"mean Dice {summary['mean_dice']:.3f}, mean IoU {summary['mean_iou']:.3f} "
                  f"in {summary['seconds']:.0f} s; masks and overlays in {out / 'predict'}, summary in {out / 'summary.json'}")
