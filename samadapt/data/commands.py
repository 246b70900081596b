"""CLI: `samadapt data init|check|split` and `samadapt phantom`. Heavy imports stay inside commands."""

from __future__ import annotations

from pathlib import Path

import typer

from samadapt.errors import UserError


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Describe, check and split datasets.", no_args_is_help=True)
    app.add_typer(data_app, name="data")
    data_app.command("init")(init)
    data_app.command("check")(check)
    data_app.command("split")(split)
    app.command("phantom")(phantom)


def init(
    folder: Path = typer.Argument(..., help="Dataset folder (images + masks, or images only)."),
    out: Path = typer.Option(None, "--out", help="Write the description here (default: print it)."),
    masks: Path = typer.Option(None, "--masks", help="Masks folder, when FOLDER holds the images only."),
) -> None:
    """Propose a dataset description (YAML) by inspecting a folder."""
    from samadapt.data.dataset import build_cases
    from samadapt.data.infer import description_yaml, propose_description
    from samadapt.engine.atomic import atomic_write_text

    spec = propose_description(folder, masks=masks)
    dataset = build_cases(spec)  # proves the proposal loads before anything is written
    if out is None:
        print(description_yaml(spec), end="")
        return
    if out.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise UserError("description file must end in .yaml, .yml or .json", out)
    if out.suffix.lower() == ".json":
        import json

        text = json.dumps(spec.to_dict(out.resolve().parent), indent=1) + "\n"
    else:
        text = description_yaml(spec, out.resolve().parent)
    atomic_write_text(out, text)
    print(f"wrote {out}: {len(dataset.cases)} cases, {len(dataset.labeled_cases())} labelled, "
          f"classes {', '.join(spec.class_names) or '(none)'}")


def check(
    dataset: Path = typer.Argument(..., help="Description file or dataset folder."),
    warnings_as_errors: bool = typer.Option(False, "--strict", help="Fail on warnings too."),
) -> None:
    """Print dataset statistics; exit 2 listing every problem with its file."""
    from rich.console import Console

    from samadapt.data.check import check_dataset, report_table
    from samadapt.data.dataset import load_dataset

    report = check_dataset(load_dataset(dataset))
    console = Console(soft_wrap=True)
    console.print(report_table(report))
    for finding in report.findings:
        console.print(str(finding), markup=False, highlight=False)
    failures = report.errors + (report.warnings if warnings_as_errors else [])
    if failures:
        raise UserError(f"{len(failures)} problem(s) in dataset {dataset} (listed above)")


def split(
    dataset: Path = typer.Argument(..., help="Description file or dataset folder."),
    folds: int = typer.Option(5, "--folds", help="Number of cross-validation folds (1: one train/val split)."),
    seed: int = typer.Option(0, "--seed"),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Patients held out for testing."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Validation patients when --folds 1."),
    out: Path = typer.Option(Path("splits.json"), "--out"),
) -> None:
    """Write patient-level train/val/test splits (k-fold) to a JSON file."""
    from samadapt.data.dataset import load_dataset
    from samadapt.data.splits import make_splits, write_splits

    splits = make_splits(load_dataset(dataset), folds, seed, test_fraction, val_fraction)
    write_splits(splits, out)
    sizes = ", ".join(f"fold {s['fold']}: {len(s['train']['cases'])} train / {len(s['val']['cases'])} val"
                      for s in splits["splits"])
    print(f"wrote {out}: test {len(splits['test']['cases'])} cases ({len(splits['test']['patients'])} patients); {sizes}")


def phantom(
    out: Path = typer.Option(..., "--out", help="Output folder."),
    n: int = typer.Option(200, "--n", help="Labelled images (or volumes)."),
    size: int = typer.Option(512, "--size", help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed"),
    kind: str = typer.Option("fa", "--kind", help="fa (angiography with leakage) or anatomy (organ-like)."),
    unlabeled: int = typer.Option(0, "--unlabeled", help="Extra unlabeled images for pre-training."),
    dims: str = typer.Option("2d", "--dims", help="anatomy only: 2d images or 3d NIfTI volumes."),
    montage: Path = typer.Option(None, "--montage", help="Also save a PNG montage of a few phantoms (2d)."),
) -> None:
    """Generate synthetic phantoms with exact masks and a ready dataset description."""
    import time

    from samadapt.data.phantoms import generate_phantoms, save_montage

    if montage is not None and dims != "2d":  # refused before any phantom is written
        raise UserError(f"--montage draws 2D phantoms: drop it or use --dims 2d, not {dims}", montage)
    start = time.perf_counter()
    description = generate_phantoms(out, n=n, size=size, seed=seed, kind=kind, unlabeled=unlabeled, dims=dims)
    if montage is not None:
        save_montage(out, montage)
    print(f"wrote {n} {kind} phantoms (+{unlabeled} unlabeled) to {out} in {time.perf_counter() - start:.1f}s; "
          f"description {description}")
