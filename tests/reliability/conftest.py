"""A small world of good and broken inputs for the reliability tests, built once per session.

Everything is generated here (tiny phantoms, hand-made broken files); nothing comes from real data.
The folder is the working directory of every bad-input case, so command lines use short relative
paths and error messages stay readable.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


class _StubModel:
    """Enough of a `SegmentAnything` for `save_model_folder`: name, family, size and a tiny state."""

    def __init__(self, name: str):
        self.name, self.family, self.image_size = name, "sam2", 64
        self.hf = torch.nn.Linear(2, 2)


class _RunsCode:
    """A pickle payload that would run a command when unpickled without restrictions."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write_broken_files(bad: Path) -> None:
    import nibabel as nib
    import tifffile

    bad.mkdir()
    Image.fromarray(np.full((64, 64), 90, np.uint8)).save(bad / "ok.png")
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(bad / "ok.jpg", quality=90)
    (bad / "empty.png").write_bytes(b"")
    (bad / "empty.pt").write_bytes(b"")
    for name in ("ok.png", "ok.jpg"):
        raw = (bad / name).read_bytes()
        (bad / f"truncated{Path(name).suffix}").write_bytes(raw[: len(raw) // 2])
    (bad / "garbage.png").write_bytes(b"this is text, not a PNG file\n" * 4)
    (bad / "notes.txt").write_text("not an image\n")
    tifffile.imwrite(bad / "five_channels.tif", np.zeros((64, 64, 5), np.uint8), photometric="minisblack",
                     planarconfig="contig")
    volume = np.ones((16, 16, 8), np.float32)
    volume[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(volume, np.eye(4)), bad / "nan.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((16, 16, 8, 3), np.float32), np.eye(4)), bad / "four_d.nii.gz")
    (bad / "a_file").write_text("a regular file where a folder is expected\n")
    two_classes = np.zeros((32, 32, 8), np.uint8)  # class 1 on slice 1, class 2 only on slice 6
    two_classes[4:10, 4:10, 1], two_classes[20:26, 20:26, 6] = 1, 2
    nib.save(nib.Nifti1Image(two_classes, np.eye(4)), bad / "two_classes.nii.gz")
    # Meta's layout of SAM2's image half only (as an image-model export holds): no memory weights
    torch.save({"model": {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(96, 3, 7, 7),
                          "sam_mask_decoder.iou_token.weight": torch.zeros(1, 256)}}, bad / "sam2_image_only.pt")
    (bad / "empty_dir").mkdir()
    (bad / "not_yaml.yaml").write_text("images: [unclosed\n")
    (bad / "unknown_key.yaml").write_text("images: images\ncolour_space: rgb\n")
    with open(bad / "runs_code.pt", "wb") as handle:
        pickle.dump({"model": _RunsCode(bad / "CODE_RAN")}, handle)
    for name in ("pred", "gt"):
        (bad / "eval" / name).mkdir(parents=True)
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(bad / "eval" / name / "c1.png")
    (bad / "eval" / "pred" / "c1.png").write_bytes(b"")  # a damaged prediction
    (bad / "not_results").mkdir()
    (bad / "not_results" / "per_case.csv").write_text("name,score\nx,0.5\n")
    collide = bad / "collide"
    collide.mkdir()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(collide / "a.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(collide / "a.bmp")


def _write_checkpoints(root: Path) -> None:
    from samadapt.modeling.model_folder import save_model_folder

    save_model_folder(_StubModel("sam2-hiera-small"), root / "ckpt_small", {"command": "reliability test"})
    save_model_folder(_StubModel("sam2-hiera-tiny"), root / "ckpt_flipped", {"command": "reliability test"})
    weights = root / "ckpt_flipped" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # one flipped byte inside the tensor data: only the hash notices
    weights.write_bytes(bytes(data))


def _write_runs_and_exports(root: Path) -> None:
    """unet_run/ (a U-Net baseline run), run_missing/ (a run whose model.safetensors is gone) and
    onnx_mixed/ (an export folder whose encoder.onnx came from another variant's export)."""
    import json

    import onnx
    from onnx import TensorProto, helper

    from samadapt.engine.atomic import sha256_file
    from samadapt.export.onnx_folder import stamp_file
    from samadapt.finetune.runs import save_run_model
    from samadapt.modeling.unet_baselines import ConvBaseline

    save_run_model(ConvBaseline("unet", ["vessel"], 64), root / "unet_run", {"loss": "dice"}, {"command": "test"})
    shutil.copytree(root / "ckpt_small", root / "run_missing" / "model")
    (root / "run_missing" / "model" / "model.safetensors").unlink()
    folder = root / "onnx_mixed"
    folder.mkdir()
    files = {}
    for name, model in (("encoder.onnx", "sam2-hiera-small"), ("decoder.onnx", "sam2-hiera-tiny")):
        value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "stub", [value], [out])
        onnx.save(helper.make_model(graph), str(folder / name))
        stamp_file(folder / name, model, 64, name.split(".")[0])
        files[name] = sha256_file(folder / name)
    (folder / "samadapt-onnx.json").write_text(json.dumps({
        "format": "samadapt-onnx", "format_version": 1, "kind": "class-prompts", "model": "sam2-hiera-tiny",
        "family": "sam2", "image_size": 64, "classes": ["vessel"], "files": files,
        "decoder": {"inputs": ["embedding", "high_res_s4", "high_res_s8"], "outputs": ["logits"]}}))


def _write_fewshot_runs(root: Path) -> None:
    """fs_run/ (a one-epoch few-shot run on anat2d_cache, random weights) and fs_run_no_memory/ (the
    same run, recorded as cached with ckpt_small, an image model without SAM2's memory)."""
    import json

    from samadapt.data.dataset import load_dataset
    from samadapt.fewshot.cache import weights_fingerprint
    from samadapt.fewshot.train import FewShotConfig, train_fewshot

    dataset = load_dataset(root / "anat2d")
    train_fewshot(dataset.cases, dataset.class_names, root / "anat2d_cache", root / "fs_run",
                  FewShotConfig(shots=1, epochs=1), progress=False)
    shutil.copytree(root / "fs_run", root / "fs_run_no_memory")
    meta_path = root / "fs_run_no_memory" / "model" / "samadapt.json"
    meta = json.loads(meta_path.read_text())
    meta["extra_config"]["fewshot"]["cache_model"].update(
        weights=str(root / "ckpt_small"), weights_fingerprint=weights_fingerprint(root / "ckpt_small"))
    meta_path.write_text(json.dumps(meta))


def _dataset_variants(root: Path) -> None:
    import nibabel as nib

    shutil.copytree(root / "fa", root / "fa_foreign")
    mask_path = root / "fa_foreign" / "masks" / "P0001-1.png"
    mask = np.array(Image.open(mask_path))
    mask[:4, :4] = 7  # a label the class list does not know
    Image.fromarray(mask).save(mask_path)
    for name in ("anat3d_nan", "anat3d_4d"):
        shutil.copytree(root / "anat3d", root / name)
    volume = np.ones((32, 32, 8), np.float32)
    volume[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(volume, np.eye(4)), root / "anat3d_nan" / "images" / "A0001.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((32, 32, 8, 2), np.float32), np.eye(4)),
             root / "anat3d_4d" / "images" / "A0001.nii.gz")


def _write_clinical_files(bad: Path) -> None:
    """Broken DICOM series and NRRD headers, generated (never copied from real data), and a Hub
    cache holding repositories that are not SAM2 weights."""
    from clinical_files import mark_compressed, sample_volume, write_dicom_series, write_itk, write_non_image_dicom
    from hub_cache import add_cached_repo

    (bad / "unknown_window.yaml").write_text("dims: 3d\nimages: ../anat3d/images\nintensity: ct:liver\n")
    add_cached_repo(bad / "hf_cache", "acme/vit-base", {"config.json": b'{"model_type": "vit"}',
                                                       "model.safetensors": b"not used"})
    add_cached_repo(bad / "hf_cache", "acme/two-checkpoints", {"a.pt": b"x", "b.pt": b"y", "README.md": b"z"})

    volume = sample_volume()
    write_dicom_series(bad / "dicom_two_series", volume, series_uid="1.2.826.0.9.1", prefix="a")
    write_dicom_series(bad / "dicom_two_series", volume, series_uid="1.2.826.0.9.2", prefix="b")
    write_dicom_series(bad / "dicom_missing_slice", volume, positions=[0.0, 2.5, 7.5, 10.0])
    write_dicom_series(bad / "dicom_duplicate_slice", volume, positions=[0.0, 2.5, 2.5, 5.0])
    write_dicom_series(bad / "dicom_uneven_spacing", volume, positions=[0.0, 2.5, 4.0, 6.5])
    write_non_image_dicom(bad / "report.dcm")
    mark_compressed(write_dicom_series(bad / "dicom_htj2k", volume))
    write_itk(bad / "nrrd_data" / "v.nhdr", volume)
    (bad / "nrrd_header").mkdir()
    text = (bad / "nrrd_data" / "v.nhdr").read_text(encoding="latin-1")
    (bad / "nrrd_header" / "v.nhdr").write_text(
        "".join(line if not line.startswith("data file") else "data file: ../nrrd_data/v.raw.gz\n"
                for line in text.splitlines(keepends=True)), encoding="latin-1")


def _write_leaky_inputs(root: Path) -> None:
    """Splits files that leak (a case in two parts, val = train, unknown cases), predictions with a
    label no class has, a dataset whose mask has another size than its image, and run folders and a
    cache marked incomplete (their command was killed)."""
    import json

    from samadapt.engine.run_folder import INCOMPLETE_FILE

    bad = root / "bad"
    splits = json.loads((root / "fa" / "splits.json").read_text())
    fold = splits["splits"][0]
    variants = {
        "splits_train_and_test": lambda s: s["splits"][0]["train"]["cases"].append(s["test"]["cases"][0]),
        "splits_val_is_train": lambda s: s["splits"][0].update(val=dict(s["splits"][0]["train"])),
        "splits_unknown_case": lambda s: s["splits"][0]["val"]["cases"].append("P9999-1"),
        "splits_train_twice": lambda s: s["splits"][0]["train"]["cases"].append(fold["train"]["cases"][0]),
    }
    for name, change in variants.items():
        copy = json.loads(json.dumps(splits))
        change(copy)
        (bad / f"{name}.json").write_text(json.dumps(copy))
    for name in ("pred", "gt"):
        (bad / "eval_stray" / name).mkdir(parents=True)
        mask = np.zeros((64, 64), np.uint8)
        mask[8:24, 8:24] = 1
        if name == "pred":
            mask[40:44, 40:44] = 7  # a stray value: no class 7 exists
        Image.fromarray(mask).save(bad / "eval_stray" / name / "c1.png")
    shutil.copytree(root / "fa", root / "fa_size")
    mask_path = root / "fa_size" / "masks" / "P0001-1.png"
    Image.fromarray(np.array(Image.open(mask_path))[:32, :32]).save(mask_path)
    for source, name in (("ckpt_small", "ckpt_incomplete"), ("anat2d_cache", "cache_incomplete")):
        shutil.copytree(root / source, root / name)
        (root / name / INCOMPLETE_FILE).write_text("{}\n")


@pytest.fixture(scope="session")
def bad_world(tmp_path_factory) -> Path:
    """Root folder with: fa/ (12 FA phantoms, 6 patients, splits.json with 2 folds), anat2d/ (4
    anatomy phantoms, splits.json), anat2d_cache/ (few-shot features), anat3d/ (2 volumes, splits.json with 2 folds), broken
    dataset copies, bad/ (broken files) and stub checkpoints."""
    from samadapt.cli import main
    from samadapt.data.dataset import load_dataset
    from samadapt.data.phantoms import generate_phantoms
    from samadapt.fewshot.cache import build_cache

    root = tmp_path_factory.mktemp("bad_world")
    generate_phantoms(root / "fa", n=12, size=64, seed=0, kind="fa")
    generate_phantoms(root / "anat2d", n=4, size=64, seed=0, kind="anatomy")
    generate_phantoms(root / "anat3d", n=2, size=32, seed=0, kind="anatomy", dims="3d", depth=8)
    assert main(["data", "split", str(root / "fa"), "--folds", "2", "--out", str(root / "fa" / "splits.json")]) == 0
    assert main(["data", "split", str(root / "anat2d"), "--folds", "1", "--test-fraction", "0.25",
                 "--out", str(root / "anat2d" / "splits.json")]) == 0
    assert main(["data", "split", str(root / "anat3d"), "--folds", "2", "--test-fraction", "0",
                 "--out", str(root / "anat3d" / "splits.json")]) == 0
    build_cache(load_dataset(root / "anat2d").cases, root / "anat2d_cache", "sam2-hiera-tiny", None, 64)
    _dataset_variants(root)
    _write_broken_files(root / "bad")
    _write_clinical_files(root / "bad")
    _write_checkpoints(root)
    _write_runs_and_exports(root)
    _write_leaky_inputs(root)
    _write_fewshot_runs(root)
    return root
