"""Dataset descriptions, loading, inference of descriptions (`data init`) and the real datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from samadapt.data.dataset import load_dataset
from samadapt.data.infer import description_yaml, propose_description
from samadapt.errors import UserError
from shared_data import shared_subdir  # tests/shared_data.py
from data_fixtures import fa_phantoms  # noqa: F401  (fixture)


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def test_description_file_with_patients(fa_phantoms):
    dataset = load_dataset(fa_phantoms / "dataset.yaml")
    assert dataset.name == "phantom-fa" and dataset.class_names == ["leakage"]
    assert len(dataset.cases) == 12 and len(dataset.patients()) == 6
    case = dataset.case("P0001-2")
    assert case.patient == "P0001" and case.mask.name == "P0001-2.png"
    assert case.load_mask().shape == case.load_image().shape == (64, 64)
    # A folder holding dataset.yaml loads the same
    assert [c.id for c in load_dataset(fa_phantoms).cases] == [c.id for c in dataset.cases]


def test_plain_folder_pair_and_unlabeled_folder(tmp_path):
    for name in ("a", "b"):
        _png(tmp_path / "imgs" / f"{name}.png", np.full((5, 6), 100))
        _png(tmp_path / "gts" / f"{name}.png", np.eye(5, 6) * 255)
    dataset = load_dataset(tmp_path / "imgs", masks=tmp_path / "gts")
    assert dataset.spec.layout.kind == "binary" and len(dataset.labeled_cases()) == 2
    unlabeled = load_dataset(tmp_path / "imgs")
    assert not unlabeled.spec.labeled and len(unlabeled.cases) == 2


def test_description_errors_name_the_file(tmp_path):
    (tmp_path / "images").mkdir()
    bad = tmp_path / "d.yaml"
    bad.write_text("images: images\nmasks: nowhere\n")
    with pytest.raises(UserError, match="nowhere"):
        load_dataset(bad)
    bad.write_text("images: images\ncolour: red\n")
    with pytest.raises(UserError, match="d.yaml.*colour"):
        load_dataset(bad)
    bad.write_text("images: [unclosed\n")
    with pytest.raises(UserError, match="d.yaml.*YAML"):
        load_dataset(bad)


def test_orphans_and_missing_masks_are_listed(tmp_path):
    _png(tmp_path / "images" / "a.png", np.zeros((4, 4)))
    _png(tmp_path / "images" / "b.png", np.zeros((4, 4)))
    _png(tmp_path / "masks" / "a.png", np.eye(4))
    _png(tmp_path / "masks" / "c.png", np.eye(4))
    dataset = load_dataset(tmp_path)
    assert [c.id for c in dataset.labeled_cases()] == ["a"]
    assert [p.name for p in dataset.orphan_masks] == ["c.png"]


def test_proposal_roundtrips_through_yaml(tmp_path, fa_phantoms):
    (fa_phantoms / "dataset.yaml").rename(fa_phantoms / "moved.yaml")
    try:
        spec = propose_description(fa_phantoms)
    finally:
        (fa_phantoms / "moved.yaml").rename(fa_phantoms / "dataset.yaml")
    assert spec.layout.kind == "index" and spec.patient_regex == "^(?P<patient>[^-]+)-"
    assert spec.class_names == ["leakage"]  # names come from classes.json
    out = tmp_path / "desc.yaml"
    out.write_text(description_yaml(spec, tmp_path))
    assert yaml.safe_load(out.read_text())["images"].startswith("..")
    assert len(load_dataset(out).cases) == 12


def test_init_drive_like_names_pairs_by_id(tmp_path):
    for i in (21, 22):
        _png(tmp_path / "training" / "images" / f"{i}_training.png", np.full((4, 4), 50))
        _png(tmp_path / "training" / "1st_manual" / f"{i}_manual1.png", np.eye(4) * 255)
        _png(tmp_path / "training" / "mask" / f"{i}_training_mask.png", np.full((4, 4), 255))
    spec = propose_description(tmp_path)
    assert spec.masks.name == "1st_manual" and spec.fov.name == "mask" and spec.id_regex
    dataset = load_dataset(tmp_path)
    assert [c.id for c in dataset.labeled_cases()] == ["21", "22"]


REAL = {  # folder -> (layout, cases, classes)
    "ffa/labeled": ("index", 15, 2),
    "drive": ("binary", 20, 1),
    "jsrt": ("folders", 150, 5),
    "hippocampus": ("nifti", 130, 2),
}


@pytest.mark.realdata
@pytest.mark.parametrize("folder", sorted(REAL))
def test_init_proposes_a_loadable_description_for_real_data(folder, tmp_path):
    root = shared_subdir(*folder.split("/"))
    layout, cases, classes = REAL[folder]
    spec = propose_description(root)
    assert spec.layout.kind == layout and len(spec.class_names) == classes
    out = tmp_path / "dataset.json"
    out.write_text(json.dumps(spec.to_dict(tmp_path)))
    dataset = load_dataset(out)
    assert len(dataset.labeled_cases()) == cases and not dataset.orphan_masks
    if folder == "ffa/labeled":
        assert len(dataset.patients()) == 12 and dataset.case("11-3").patient == "11"
    if folder == "jsrt":  # large structures first so the clavicles stay on top
        assert dataset.class_names[-2:] in (["left_clavicle", "right_clavicle"], ["right_clavicle", "left_clavicle"])
