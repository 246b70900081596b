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
# A splits file made for an overfitting check (val = train) says so; any other with val = train leaks.
OVERFIT_KEY = "overfit"


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
    check_splits(splits, Path(path))
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
    check_splits(splits, path)  # its structure and parts before anything reads them
    if dataset is not None:
        if splits.get("dataset") != dataset.name:
            raise UserError(f"splits are for dataset {splits['dataset']!r}, not {dataset.name!r}", path)
        known = {c.id for c in dataset.cases}
        listed = set(splits["test"]["cases"]) | {c for s in splits["splits"] for p in ("train", "val") for c in s[p]["cases"]}
        missing = sorted(listed - known)
        if missing:
            raise UserError(f"cases in the splits are missing from the dataset: {', '.join(missing[:5])}", path)
        check_splits(splits, path, dataset)  # now by patient too
    return splits


def _ids(part, what: str, path: Path) -> list[str]:
    cases = part.get("cases") if isinstance(part, dict) else None
    if not isinstance(cases, list) or not all(isinstance(c, str) for c in cases):
        raise UserError(f"{what} needs a list of case ids under 'cases'", path)
    return cases


def check_splits(splits: dict, path: Path, dataset: Dataset | None = None) -> None:
    """Refuse a splits file whose parts leak into each other: a case (or, with `dataset`, a
    patient) in two parts of one fold, a validation part equal to the training part, a case listed
    twice. Every reader of splits files goes through `load_splits`, hence through this."""
    if not isinstance(splits["splits"], list) or not splits["splits"]:
        raise UserError("'splits' must be a non-empty list of folds", path)
    test = _ids(splits.get("test", {}), "'test'", path)
    overfit = splits.get(OVERFIT_KEY) is True
    patient_of = {c.id: c.patient for c in dataset.cases} if dataset is not None else {}
    for index, fold in enumerate(splits["splits"]):
        if not isinstance(fold, dict):
            raise UserError(f"fold {index} is not a mapping", path)
        train, val = (_ids(fold.get(name), f"fold {index} {name!r}", path) for name in ("train", "val"))
        if overfit:  # an overfitting check scores the training cases on purpose: val may be train
            parts = {"train": sorted(set(train) | set(val)), "test": test}
        else:
            if val and sorted(val) == sorted(train):
                raise UserError(f"fold {index}: the val part is the train part; validation must hold other cases "
                                f"(for an overfitting check on purpose, add \"{OVERFIT_KEY}\": true)", path)
            parts = {"train": train, "val": val, "test": test}
        seen: dict[str, str] = {}
        patients: dict[str, str] = {}
        for name, ids in parts.items():
            for case in ids:
                if case in seen:
                    where = f"twice in {name}" if seen[case] == name else f"in both {seen[case]} and {name}"
                    raise UserError(f"fold {index}: case {case!r} is {where} (a case may be in one part only)", path)
                seen[case] = name
                patient = patient_of.get(case)
                if patient is not None and patients.setdefault(patient, name) != name:
                    raise UserError(f"fold {index}: patient {patient!r} has cases in both {patients[patient]} and "
                                    f"{name} (all of a patient's cases belong in one part)", path)


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
