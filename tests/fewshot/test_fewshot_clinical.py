"""Few-shot prediction on DICOM and NRRD input: the same anatomy stored in other voxel orders gets
the same mask at the same world positions, written in each input's own format and geometry."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from clinical_files import write_dicom_series, write_itk

from samadapt.cli import main
from samadapt.data.phantoms import generate_phantoms
from samadapt.data.volumes import read_volume

MODEL, SIZE = "sam2-hiera-tiny", 64
LPS = np.diag([-1.0, -1.0, 1.0])


def test_dicom_nrrd_and_nifti_inputs_get_the_same_mask_in_world_space(tmp_path, capsys):
    description = generate_phantoms(tmp_path / "ph3d", n=2, size=64, kind="anatomy", dims="3d", depth=6)
    cache, run, out = tmp_path / "cache", tmp_path / "run", tmp_path / "pred"
    assert main(["fewshot", "cache", "--model", MODEL, "--image-size", str(SIZE), "--data", str(description),
                 "--out", str(cache)]) == 0
    assert main(["fewshot", "train", "--data", str(description), "--cache", str(cache), "--out", str(run),
                 "--shots", "2", "--epochs", "1"]) == 0
    data = np.asarray(nib.load(str(description.parent / "images" / "A0001.nii.gz")).dataobj)[:, :48].astype(np.int16)
    spacing, origin = (0.8, 0.9, 2.5), (10.0, -20.0, 30.0)
    inputs = tmp_path / "inputs"
    # LPS-stored DICOM (two series in the folder), and an NRRD of the same world volume whose voxel
    # axes are stored reversed in x and swapped (y, z) <-> (z, y).
    write_dicom_series(inputs / "ct", data, spacing, np.eye(3), origin, series_uid="1.2.826.0.1.1")
    write_dicom_series(inputs / "ct", data[:, :, :3], spacing, np.eye(3), origin, series_uid="1.2.826.0.1.2", prefix="b")
    permuted = np.ascontiguousarray(data[::-1].transpose(0, 2, 1))
    direction = np.array([[-1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]])
    nrrd_origin = np.asarray(origin) + np.array([(data.shape[0] - 1) * spacing[0], 0, 0])
    write_itk(inputs / "ct_swapped.nrrd", permuted, (spacing[0], spacing[2], spacing[1]), direction, nrrd_origin)

    assert main(["fewshot", "predict", "--model", str(run), "--input", str(inputs / "ct"), "--out", str(out)]) == 2
    assert "choose one with --series UID: 1.2.826.0.1.1 (6 slices), 1.2.826.0.1.2 (3 slices)" in capsys.readouterr().err
    assert not out.exists()
    assert main(["fewshot", "predict", "--model", str(run), "--input", str(inputs / "ct"), "--out", str(out),
                 "--series", "1.2.826.0.1.1", "--dicom-seg"]) == 0
    assert main(["fewshot", "predict", "--model", str(run), "--input", str(inputs / "ct_swapped.nrrd"),
                 "--out", str(out)]) == 0
    from_dicom, from_nrrd = read_volume(out / "ct_mask.nii.gz"), read_volume(out / "ct_swapped_mask.nrrd")
    assert np.allclose(from_dicom.affine, from_nrrd.affine, atol=1e-5)
    assert np.array_equal(from_dicom.data, from_nrrd.data)  # one mask, in both files' own grids
    assert from_dicom.data.any()
    assert read_volume(inputs / "ct_swapped.nrrd").data.shape == from_nrrd.data.shape
    # The DICOM-SEG, read back with highdicom in the series' slice order, is the same mask.
    import highdicom as hd
    import pydicom

    seg = hd.seg.segread(str(out / "ct_seg.dcm"))
    sources = sorted((pydicom.dcmread(str(p)) for p in (inputs / "ct").iterdir() if p.name.startswith("slice")),
                     key=lambda ds: float(ds.ImagePositionPatient[2]))
    frames = seg.get_pixels_by_source_instance([s.SOPInstanceUID for s in sources], combine_segments=True)
    stored, _ = from_dicom.to_stored(from_dicom.data)
    assert np.array_equal(frames, stored.transpose(2, 1, 0))


def test_runs_and_caches_refuse_data_prepared_with_another_intensity(tmp_path, capsys):
    import json

    description = generate_phantoms(tmp_path / "ph3d", n=2, size=32, kind="anatomy", dims="3d", depth=4)
    text = description.read_text()
    cache, run = tmp_path / "cache", tmp_path / "run"
    assert main(["fewshot", "cache", "--model", MODEL, "--image-size", str(SIZE), "--data", str(description),
                 "--out", str(cache)]) == 0
    description.write_text(text + "intensity: ct:soft_tissue\n")
    capsys.readouterr()
    assert main(["fewshot", "train", "--data", str(description), "--cache", str(cache), "--out", str(run),
                 "--shots", "1", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "prepared with intensity 'percentile:0.5-99.5' but the data says 'ct:soft_tissue'" in err
    assert main(["fewshot", "cache", "--model", MODEL, "--image-size", str(SIZE), "--data", str(description),
                 "--out", str(cache)]) == 0
    manifest = json.loads((cache / "cache.json").read_text())
    assert {e["intensity"] for e in manifest["entries"].values()} == {"ct:soft_tissue"}
    assert main(["fewshot", "train", "--data", str(description), "--cache", str(cache), "--out", str(run),
                 "--shots", "1", "--epochs", "1"]) == 0
    description.write_text(text)  # back to the default percentile scaling
    capsys.readouterr()
    assert main(["fewshot", "evaluate", "--model", str(run), "--data", str(description), "--out",
                 str(tmp_path / "eval")]) == 2
    assert "the few-shot run's support was prepared with intensity 'ct:soft_tissue'" in capsys.readouterr().err
