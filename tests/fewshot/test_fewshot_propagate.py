"""`fewshot predict --propagate`: seeds from the few-shot decoder or the support slices, SAM2's
memory through the rest of the volume (tiny random models at 64 px, a 6-slice phantom volume)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from samadapt.cli import main
from samadapt.data.phantoms import generate_phantoms
from samadapt.fewshot.config import PropagationSeeds
from samadapt.fewshot.predict import load_fewshot_run, segment_volume
from samadapt.fewshot.propagate import VolumePropagation, confident_seeds, memory_model_for_run, read_support_frames

MODEL, SIZE = "sam2-hiera-tiny", 64


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset description, few-shot run) on two 64x64x6 anatomy phantom volumes."""
    root = tmp_path_factory.mktemp("fsprop")
    description = generate_phantoms(root / "ph3d", n=2, size=64, kind="anatomy", dims="3d", depth=6)
    assert main(["fewshot", "cache", "--model", MODEL, "--image-size", str(SIZE), "--data", str(description),
                 "--out", str(root / "cache")]) == 0
    assert main(["fewshot", "train", "--data", str(description), "--cache", str(root / "cache"),
                 "--out", str(root / "run"), "--shots", "2", "--epochs", "1"]) == 0
    return description, root / "run"


@pytest.fixture(scope="module")
def run(trained):
    return load_fewshot_run(trained[1])


def _volume(trained) -> tuple[Path, np.ndarray]:
    path = trained[0].parent / "images" / "A0001.nii.gz"
    return path, np.asarray(nib.load(str(path)).dataobj)


def _fake_decoder(monkeypatch, seeds: dict[int, int], classes: int = 3):
    """The decoder's logits: class 1 a confident disk on the slices in `seeds` (slice -> radius),
    nothing else anywhere."""
    def restored_logits(run, units, batch_size=4):
        h, w = units[0].shape[:2]
        yy, xx = np.mgrid[:h, :w]
        for z in range(len(units)):
            logits = torch.full((classes, h, w), -8.0)
            if z in seeds:
                logits[0][torch.from_numpy((yy - h // 2) ** 2 + (xx - w // 2) ** 2 < seeds[z] ** 2)] = 6.0
            yield logits

    monkeypatch.setattr("samadapt.fewshot.predict.restored_logits", restored_logits)


def _absent_everywhere(memory):
    with torch.no_grad():  # random weights: the object score says "absent" on every tracked slice
        memory.hf.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(-20.0)
    return memory


def test_both_seedings_write_label_volumes_in_the_input_geometry(trained, tmp_path, capsys):
    description, run_dir = trained
    source, data = _volume(trained)
    oblique = tmp_path / "oblique.nii.gz"
    affine = np.array([[0, -1.5, 0, 10], [2.0, 0, 0, -5], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data[:, :48].astype(np.int16), affine), str(oblique))
    for mode, extra in (("confident", []), ("support", ["--support-data", str(description)])):
        out = tmp_path / mode
        assert main(["fewshot", "predict", "--model", str(run_dir), "--input", str(oblique), "--out", str(out),
                     "--propagate", "--seed-slices", mode, "--seed-count", "2", *extra]) == 0
        written = nib.load(str(out / "oblique_mask.nii.gz"))
        assert written.shape == data[:, :48].shape
        np.testing.assert_allclose(written.affine, affine)
        labels = np.asarray(written.dataobj)
        assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2, 3}
    assert "memory attention and the propagated masks mean nothing" in capsys.readouterr().err


def test_confident_seeds_are_the_most_confident_slices_per_class():
    logits = torch.full((5, 2, 8, 8), -5.0)  # 5 slices, 2 classes
    logits[1, 0, :4] = 1.0   # class 1: large but unsure
    logits[3, 0, :2] = 4.0   # class 1: small and sure
    logits[4, 0, :1] = 2.0
    logits[2, 1, 4:] = 3.0   # class 2: one slice only
    prompts = confident_seeds(list(logits), 2)
    assert [(p.obj_id, p.slice) for p in prompts] == [(1, 3), (1, 4), (2, 2)]
    np.testing.assert_array_equal(prompts[0].mask, (logits[3, 0] > 0).numpy())


def test_slices_the_object_score_calls_empty_stay_empty(run, trained, monkeypatch):
    _, data = _volume(trained)
    _fake_decoder(monkeypatch, {1: 10, 3: 14, 4: 6})
    memory = _absent_everywhere(memory_model_for_run(run))
    labels = segment_volume(run, data, propagation=VolumePropagation(memory, PropagationSeeds("confident", 2)))
    assert labels.shape == data.shape
    filled = sorted(int(z) for z in np.flatnonzero(labels.any(axis=(0, 1))))
    assert filled == [1, 3]  # the two most confident seeds; every tracked slice said "absent"
    assert set(np.unique(labels)) == {0, 1}
    support = read_support_frames(run, trained[0], 2)
    empty = segment_volume(run, data, propagation=VolumePropagation(memory, PropagationSeeds("support", 2), support))
    assert not empty.any()  # support seeding prompts no slice of the volume itself


def test_propagation_is_deterministic_and_reads_the_run_encoder(run, trained, monkeypatch):
    _, data = _volume(trained)
    _fake_decoder(monkeypatch, {2: 12})
    first, second = memory_model_for_run(run), memory_model_for_run(run)
    for name, tensor in first.hf.state_dict().items():
        assert torch.equal(tensor, second.hf.state_dict()[name]), name
    for name, tensor in run.segmenter.sam.hf.vision_encoder.state_dict().items():
        assert torch.equal(tensor, first.hf.vision_encoder.state_dict()[name]), name
    seeds = PropagationSeeds("confident", 1)
    a = segment_volume(run, data, propagation=VolumePropagation(first, seeds))
    b = segment_volume(run, data, propagation=VolumePropagation(second, seeds))
    np.testing.assert_array_equal(a, b)
    assert a[:, :, 2].any()  # the seed slice keeps its mask
