"""Tiny phantom data sets and splits for the fine-tuning tests (64-128 px, a handful of images)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _same_train_val_split(dataset_yaml: Path, cases: list[str], out: Path) -> Path:
    """A split whose train and val parts are the same cases: what an overfitting test needs."""
    from samadapt.data.dataset import load_dataset
    from samadapt.data.splits import make_splits, write_splits

    splits = make_splits(load_dataset(dataset_yaml), folds=1, test_fraction=0.0)
    part = {"patients": cases, "cases": cases}
    splits["splits"] = [{"fold": 0, "train": part, "val": part}]
    splits["overfit"] = True  # val = train on purpose; a splits file without it is refused
    write_splits(splits, out)
    return out


@pytest.fixture(scope="session")
def anatomy(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset.yaml, splits.json): 4 anatomy phantoms at 128 px (3 classes), train = val = 2 images."""
    from samadapt.data.phantoms import generate_phantoms

    root = tmp_path_factory.mktemp("anatomy")
    description = generate_phantoms(root / "data", n=4, size=128, seed=0, kind="anatomy")
    return description, _same_train_val_split(description, ["A0001", "A0002"], root / "splits.json")


@pytest.fixture(scope="session")
def anatomy_cv(tmp_path_factory, anatomy) -> Path:
    """A 2-fold split (no test part) of the anatomy phantoms."""
    from samadapt.data.dataset import load_dataset
    from samadapt.data.splits import make_splits, write_splits

    out = tmp_path_factory.mktemp("cv") / "splits.json"
    write_splits(make_splits(load_dataset(anatomy[0]), folds=2, test_fraction=0.0), out)
    return out


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    from samadapt.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
