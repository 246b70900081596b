"""Patient-level train/val/test and k-fold splits, deterministic by seed, stored in `splits.json`.

All frames of one patient land in the same part (FFA frames of one eye are near-duplicates: split by
image and validation scores are inflated). A test set of patients is held out first; the remaining
patients are dealt into `folds` folds, balancing the number of cases per fold. With `folds == 1`
there is one train/val split of the remaining patients instead.

File format::

    {"format": 1, "dataset": "ffa", "source": "...", "seed": 0, "folds": 5,
     "test": {"patients": [...], "cases": [...]},
     "splits": [{"fold": 0, "train": {"patients": [...], "cases": [...]}, "val": {...}}, ...]}
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from samadapt.data.dataset import Case, Dataset
from samadapt.engine.atomic import atomic_write_text
from samadapt.errors import UserError
from samadapt.options import flag

FORMAT = 1


def _part(groups: dict[str, list[Case]], patients) -> dict:
    patients = sorted(patients)
    return {"patients": patients, "cases": sorted(c.id for p in patients for c in groups[p])}


def _deal(patients: list[str], groups: dict[str, list[Case]], bins: int) -> list[list[str]]:
    """Assign patients (already shuffled) to `bins` bins, biggest patients first, each to the bin
    with the fewest cases so far (ties: lowest bin): balanced and deterministic."""
    order = sorted(patients, key=lambda p: -len(groups[p]))  # stable: keeps the shuffle among equals
    out: list[list[str]] = [[] for _ in range(bins)]
    load = [0] * bins
    for patient in order:
        target = min(range(bins), key=lambda b: (load[b], b))
        out[target].append(patient)
        load[target] += len(groups[patient])
    return out


def make_splits(dataset: Dataset, folds: int = 5, seed: int = 0, test_fraction: float = 0.2,
                val_fraction: float = 0.2) -> dict:
    """Splits of the dataset's labelled cases (all cases for an unlabeled dataset), by patient."""
    cases = dataset.labeled_cases() if dataset.spec.labeled else dataset.cases
    groups: dict[str, list[Case]] = {}
    for case in cases:
        groups.setdefault(case.patient, []).append(case)
    if folds < 1:
        raise UserError(f"{flag('folds')} must be at least 1, got {folds}")
    if not 0 <= test_fraction < 1 or not 0 < val_fraction < 1:
        raise UserError(f"fractions must be in [0, 1): test {test_fraction}, val {val_fraction}")
    patients = sorted(groups)
    rng = np.random.default_rng(seed)
    shuffled = [patients[i] for i in rng.permutation(len(patients))]
    n_test = int(round(test_fraction * len(patients)))
    if test_fraction > 0 and n_test == 0 and len(patients) >= 3:
        n_test = 1
    test, rest = shuffled[:n_test], shuffled[n_test:]
    needed = max(2, folds)
    if len(rest) < needed:
        raise UserError(f"dataset {dataset.name!r} has {len(patients)} patients: too few for {folds} fold(s) "
                        f"after holding out {n_test} for testing")
    if folds == 1:
        n_val = min(len(rest) - 1, max(1, int(round(val_fraction * len(rest)))))
        parts = [rest[:n_val]]
    else:
        parts = _deal(rest, groups, folds)
    splits = []
    for fold, val in enumerate(parts):
        train = [p for p in rest if p not in set(val)]
        splits.append({"fold": fold, "train": _part(groups, train), "val": _part(groups, val)})
    return {
        "format": FORMAT, "dataset": dataset.name,
        "source": str(dataset.spec.source or dataset.spec.images), "seed": int(seed), "folds": int(folds),
        "test_fraction": test_fraction, "test": _part(groups, test), "splits": splits,
    }


def write_splits(splits: dict, path: str | Path) -> None:
    atomic_write_text(path, json.dumps(splits, indent=1) + "\n")


def load_splits(path: str | Path, dataset: Dataset | None = None) -> dict:
    """Read `splits.json`; with `dataset`, check that it belongs to it and all its cases exist."""
    path = Path(path)
    try:
        splits = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("splits file not found", path) from None
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read splits ({exc})", path) from None
    if not isinstance(splits, dict) or splits.get("format") != FORMAT or "splits" not in splits:
        raise UserError("not a samadapt splits file", path)
    if dataset is not None:
        if splits["dataset"] != dataset.name:
            raise UserError(f"splits are for dataset {splits['dataset']!r}, not {dataset.name!r}", path)
        known = {c.id for c in dataset.cases}
        listed = set(splits["test"]["cases"]) | {c for s in splits["splits"] for p in ("train", "val") for c in s[p]["cases"]}
        missing = sorted(listed - known)
        if missing:
            raise UserError(f"cases in the splits are missing from the dataset: {', '.join(missing[:5])}", path)
    return splits


def split_cases(dataset: Dataset, splits: dict, part: str, fold: int = 0) -> list[Case]:
    """The cases of `part` ("train", "val" or "test") of fold `fold`, in dataset order."""
    if part == "test":
        ids = set(splits["test"]["cases"])
    elif part in ("train", "val"):
        if not 0 <= fold < len(splits["splits"]):
            raise UserError(f"fold {fold} does not exist; the splits have {len(splits['splits'])} fold(s)")
        ids = set(splits["splits"][fold][part]["cases"])
    else:
        raise UserError(f"split part must be train, val or test, got {part!r}")
    return [c for c in dataset.cases if c.id in ids]
