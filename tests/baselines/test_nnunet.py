"""`samadapt baseline nnunet`: the conversion to nnU-Net's raw format, the refusals, and one short
end-to-end run (nnU-Net's planning, preprocessing, training and prediction, scored by samadapt)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from samadapt.cli import main


def _dataset_and_splits(root: Path, dims: str = "2d", n: int = 6) -> tuple[Path, Path]:
    from samadapt.data.dataset import load_dataset
    from samadapt.data.phantoms import generate_phantoms
    from samadapt.data.splits import make_splits, write_splits

    description = generate_phantoms(root / f"data{dims}", n=n, size=32 if dims == "3d" else 64, seed=0,
                                    kind="anatomy", dims=dims, depth=8 if dims == "3d" else None)
    splits = root / f"splits{dims}.json"
    write_splits(make_splits(load_dataset(description), folds=1, test_fraction=0.34), splits)
    return description, splits


@pytest.fixture(scope="module")
def anatomy2d(tmp_path_factory) -> tuple[Path, Path]:
    return _dataset_and_splits(tmp_path_factory.mktemp("nnunet"))


@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_raw_dataset_has_nnunet_names_labels_and_geometry(tmp_path, dims):
    import SimpleITK as sitk

    from samadapt.baselines.nnunet_format import check_convertible, dataset_folder_name, write_raw_dataset
    from samadapt.data.dataset import load_dataset
    from samadapt.data.volumes import read_volume
    from samadapt.data.splits import load_splits, split_cases

    description, splits_file = _dataset_and_splits(tmp_path, dims)
    dataset = load_dataset(description)
    splits = load_splits(splits_file, dataset)
    train, test = split_cases(dataset, splits, "train"), split_cases(dataset, splits, "test")
    channels = check_convertible(dataset, train, test)
    folder = write_raw_dataset(tmp_path / "raw", dataset, train, test, channels)

    assert folder.name == dataset_folder_name(dataset) == "Dataset001_phantom_anatomy"
    info = json.loads((folder / "dataset.json").read_text())
    assert info["labels"] == {"background": 0, **{n: i for i, n in enumerate(dataset.class_names, start=1)}}
    assert info["numTraining"] == len(train) and info["file_ending"] == ".nii.gz"
    assert len(info["channel_names"]) == channels
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == sorted(
        f"{c.id}_{k:04d}.nii.gz" for c in train for k in range(channels))
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == sorted(
        f"{c.id}_{k:04d}.nii.gz" for c in test for k in range(channels))
    assert not (folder / "labelsTr" / f"{test[0].id}.nii.gz").exists()  # scored cases carry no label
    for case in train:
        label_file = folder / "labelsTr" / f"{case.id}.nii.gz"
        if dims == "3d":
            written = read_volume(label_file)
            np.testing.assert_array_equal(written.affine, read_volume(case.image).affine)
            labels = written.data
        else:
            labels = sitk.GetArrayFromImage(sitk.ReadImage(str(label_file)))
        np.testing.assert_array_equal(labels, case.load_mask())


def test_a_class_absent_from_the_training_part_is_refused(tmp_path):
    from samadapt.baselines.nnunet_format import check_convertible
    from samadapt.data.dataset import load_dataset
    from samadapt.errors import UserError

    description, _ = _dataset_and_splits(tmp_path)
    dataset = load_dataset(description)
    case = dataset.cases[0]
    mask = case.load_mask()
    assert (mask == 3).any()
    without_core = SimpleNamespace(id=case.id, dims=case.dims, image=case.image, load_image=case.load_image,
                                   load_mask=lambda: np.where(mask == 3, 0, mask))
    with pytest.raises(UserError, match=r"classes \['core'\] have no pixel in the training part"):
        check_convertible(dataset, [without_core], [])


def test_missing_nnunet_says_how_to_install_it(anatomy2d, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nnunetv2" else real(name, *a))
    code = main(["baseline", "nnunet", "--data", str(anatomy2d[0]), "--splits", str(anatomy2d[1]),
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "samadapt: error: nnU-Net v2 is not installed: pip install 'samadapt[nnunet]'"
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("nnunetv2") is None, reason="nnunetv2 (extra 'nnunet') not installed")
@pytest.mark.parametrize("mirroring", ["--mirroring", "--no-mirroring"])
def test_one_short_run_trains_predicts_and_is_scored_like_any_model(anatomy2d, tmp_path, capsys, mirroring):
    from samadapt.data.dataset import load_dataset
    from samadapt.data.splits import load_splits, split_cases

    description, splits_file = anatomy2d
    run = tmp_path / "run"
    code = main(["baseline", "nnunet", "--data", str(description), "--splits", str(splits_file), "--out", str(run),
                 "--epochs", "1", "--iterations-per-epoch", "2", "--threads", "1", mirroring])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "nnU-Net Epoch 0" in out and "status: finished (1 epochs x 2 iterations)" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["nnunet"]["epochs"] == 1 and summary["nnunet"]["fold"] == "all"
    assert summary["nnunet"]["plans"]["configuration"] == "2d"
    # nnU-Net's default mirrors both axes of a 2D image; the no-mirroring variant none, at test time too
    assert summary["nnunet"]["mirror_axes"] == ([0, 1] if mirroring == "--mirroring" else None)
    assert summary["config"]["mirroring"] is (mirroring == "--mirroring")
    dataset = load_dataset(description)
    test = split_cases(dataset, load_splits(splits_file, dataset), "test")
    assert sorted(p.stem for p in (run / "predictions").glob("*.png")) == sorted(c.id for c in test)
    per_case = (run / "eval" / "per_case.csv").read_text().splitlines()
    assert len(per_case) == 1 + len(test) * len(dataset.class_names)
    assert 0 <= summary["dice"]["mean"] <= 1
    assert not list(tmp_path.glob(".*staging*"))  # published, nothing left in a staging folder
    assert main(["compare", str(run), str(run), "--out", str(tmp_path / "cmp"), "--resamples", "100"]) == 0


@pytest.mark.skipif(importlib.util.find_spec("nnunetv2") is None, reason="nnunetv2 (extra 'nnunet') not installed")
def test_sigterm_during_training_exits_130_and_leaves_nothing(anatomy2d, tmp_path, monkeypatch, capsys):
    import os
    import signal
    import time

    from samadapt.baselines import nnunet

    def terminated_worker(job_file, env, log_file):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("SIGTERM did not stop the run")

    monkeypatch.setattr(nnunet, "_run_worker", terminated_worker)
    code = main(["baseline", "nnunet", "--data", str(anatomy2d[0]), "--splits", str(anatomy2d[1]),
                 "--out", str(tmp_path / "run")])
    assert code == 130, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is not None


def test_image_size_resamples_2d_cases_for_nnunet_and_predictions_back(tmp_path):
    import SimpleITK as sitk

    from samadapt.baselines.nnunet_format import FILE_ENDING, read_prediction, write_raw_dataset
    from samadapt.data.dataset import load_dataset
    from samadapt.data.splits import load_splits, split_cases

    description, splits_file = _dataset_and_splits(tmp_path)
    dataset = load_dataset(description)
    splits = load_splits(splits_file, dataset)
    train, test = split_cases(dataset, splits, "train"), split_cases(dataset, splits, "test")
    folder = write_raw_dataset(tmp_path / "raw", dataset, train, test, 1, image_size=32)

    case = train[0]
    mask = case.load_mask()  # (64, 64)
    label_file = folder / "labelsTr" / f"{case.id}{FILE_ENDING}"
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(label_file)))
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "imagesTr" / f"{case.id}_0000{FILE_ENDING}")))
    assert labels.shape == image.shape == (32, 32)
    assert set(np.unique(labels)) <= set(np.unique(mask))  # nearest: no new label values
    # a label map written at 32 px reads back on the case's 64-px grid, each pixel a 2x2 block
    back = read_prediction(label_file, case, mask.shape)
    assert back.shape == mask.shape
    np.testing.assert_array_equal(back[::2, ::2], labels)
    assert (back == mask).mean() > 0.9
