"""`data check` findings and patient-level splits, on generated data and on the real datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from samadapt.cli import main
from samadapt.data.check import check_dataset
from samadapt.data.dataset import load_dataset
from samadapt.data.splits import load_splits, make_splits, split_cases, write_splits
from samadapt.errors import UserError
from shared_data import shared_subdir  # tests/shared_data.py
from data_fixtures import fa_phantoms  # noqa: F401  (fixture)


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def _broken_dataset(root):
    _png(root / "images" / "ok.png", np.zeros((6, 6)))
    _png(root / "images" / "size.png", np.zeros((6, 6)))
    _png(root / "images" / "empty.png", np.zeros((6, 6)))
    _png(root / "images" / "nomask.png", np.zeros((6, 6)))
    _png(root / "images" / "values.png", np.zeros((6, 6)))
    (root / "images" / "corrupt.png").write_bytes(b"garbage")
    _png(root / "masks" / "ok.png", np.eye(6))
    _png(root / "masks" / "size.png", np.eye(5))
    _png(root / "masks" / "empty.png", np.zeros((6, 6)))
    _png(root / "masks" / "values.png", np.eye(6) * 5)
    _png(root / "masks" / "corrupt.png", np.eye(6))
    _png(root / "masks" / "orphan.png", np.eye(6))
    (root / "dataset.yaml").write_text("name: broken\nimages: images\nmasks: masks\nmask_layout: index\n"
                                       "classes: [{name: lesion, value: 1}, {name: other, value: 2}]\n")
    return root


def test_check_finds_every_problem_with_its_file(tmp_path):
    report = check_dataset(load_dataset(_broken_dataset(tmp_path)))
    errors = {(f.path.name, f.message.split()[0]) for f in report.errors}
    assert ("size.png", "mask") in errors  # size mismatch
    assert ("nomask.png", "image") in errors
    assert ("values.png", "label") in errors
    assert ("corrupt.png", "not") in errors
    assert ("orphan.png", "mask") in errors
    warnings = [str(f) for f in report.warnings]
    assert any("empty.png" in w and "empty" in w for w in warnings)
    assert any("'other' never occurs" in w for w in warnings)
    assert report.class_fraction("lesion") > 0


def test_check_cli_exit_codes(tmp_path, fa_phantoms, capsys):
    assert main(["data", "check", str(fa_phantoms)]) == 0
    assert "leakage" in capsys.readouterr().out
    assert main(["data", "check", str(_broken_dataset(tmp_path))]) == 2
    captured = capsys.readouterr()
    assert "orphan.png" in captured.out and "size.png" in captured.out
    assert len(captured.err.strip().splitlines()) == 1


def test_splits_are_patient_level_and_deterministic(fa_phantoms, tmp_path):
    dataset = load_dataset(fa_phantoms)
    splits = make_splits(dataset, folds=2, seed=7, test_fraction=0.2)
    assert splits == make_splits(dataset, folds=2, seed=7, test_fraction=0.2)
    assert splits != make_splits(dataset, folds=2, seed=8, test_fraction=0.2)
    test = set(splits["test"]["patients"])
    assert test
    for fold in splits["splits"]:
        train, val = set(fold["train"]["patients"]), set(fold["val"]["patients"])
        assert not train & val and not (train | val) & test
        assert len(train | val | test) == 6
    write_splits(splits, tmp_path / "splits.json")
    again = load_splits(tmp_path / "splits.json", dataset)
    assert {c.id for c in split_cases(dataset, again, "val", 1)} == set(splits["splits"][1]["val"]["cases"])
    with pytest.raises(UserError, match="fold 5"):
        split_cases(dataset, again, "train", 5)


def test_split_cli(fa_phantoms, tmp_path):
    out = tmp_path / "s.json"
    assert main(["data", "split", str(fa_phantoms), "--folds", "3", "--seed", "2", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["seed"] == 2 and data["dataset"] == "phantom-fa" and len(data["splits"]) == 3
    assert main(["data", "split", str(fa_phantoms), "--folds", "50", "--out", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


@pytest.mark.realdata
def test_ffa_frames_of_one_patient_never_straddle_splits():
    dataset = load_dataset(shared_subdir("ffa", "labeled"))
    for seed in range(5):
        splits = make_splits(dataset, folds=3, seed=seed)
        owner = {}
        for part, cases in [("test", splits["test"]["cases"])] + [
            (f"val{s['fold']}", s["val"]["cases"]) for s in splits["splits"]
        ]:
            for case_id in cases:
                patient = dataset.case(case_id).patient
                assert owner.setdefault(patient, part) == part
        assert len(owner) == 12  # every patient is somewhere


# What `data check` reports on the real data (see docs/data.md): no errors anywhere; JSRT's
# structures overlap (clavicles over lungs), hippocampus volumes differ in size.
REAL_WARNINGS = {"ffa/labeled": [], "drive": [], "jsrt": ["overlap"], "hippocampus": ["differ in size"]}


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("folder", sorted(REAL_WARNINGS))
def test_check_real_datasets(folder):
    report = check_dataset(load_dataset(shared_subdir(*folder.split("/"))))
    assert not report.errors, [str(f) for f in report.errors]
    assert len(report.warnings) == len(REAL_WARNINGS[folder])
    for expected, finding in zip(REAL_WARNINGS[folder], report.warnings):
        assert expected in finding.message
    assert all(report.class_cases[name] > 0 for name in report.class_pixels)
