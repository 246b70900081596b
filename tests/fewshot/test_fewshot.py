"""Few-shot segmentation: the feature cache, episodic training, prediction, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from samadapt.cli import main
from samadapt.data.dataset import load_dataset
from samadapt.data.phantoms import generate_phantoms
from samadapt.errors import UserError
from samadapt.fewshot.cache import FeatureCache, build_cache
from samadapt.fewshot.train import FewShotConfig, select_shots, train_fewshot
from samadapt.modeling.segment_anything import SegmentAnything

MODEL, SIZE = "sam2-hiera-tiny", 64


@pytest.fixture(scope="module")
def phantom_2d(tmp_path_factory) -> Path:
    return generate_phantoms(tmp_path_factory.mktemp("ph2d") / "data", n=4, size=64, kind="anatomy")


@pytest.fixture(scope="module")
def cache_2d(phantom_2d, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache2d") / "cache"
    build_cache(load_dataset(phantom_2d).cases, out, MODEL, None, SIZE)
    return out


# ----------------------------------------------------------------------------------- cache
def test_cache_reuses_invalidates_and_stores_fp16(phantom_2d, tmp_path):
    cases = load_dataset(phantom_2d).cases
    first = build_cache(cases, tmp_path / "c", MODEL, None, SIZE)
    assert (first.items, first.encoded, first.reused) == (4, 4, 0)
    assert first.bytes_per_item > 0
    again = build_cache(cases, tmp_path / "c", MODEL, None, SIZE)
    assert (again.encoded, again.reused) == (0, 4)
    changed = Path(cases[0].image)
    changed.write_bytes(changed.read_bytes())  # same content: still a hit
    from PIL import Image

    image = np.array(Image.open(changed))
    Image.fromarray(255 - image).save(changed)  # new content: one miss
    try:
        edited = build_cache(cases, tmp_path / "c", MODEL, None, SIZE)
        assert (edited.encoded, edited.reused, edited.removed_stale) == (1, 3, 1)
    finally:
        Image.fromarray(image).save(changed)
    cache = FeatureCache(tmp_path / "c")
    features = cache.load(cases[1].id, dtype=torch.float16)
    assert features.embedding.shape == (1, 256, SIZE // 16, SIZE // 16)
    assert features.high_res[0].shape == (1, 32, SIZE // 4, SIZE // 4)
    resized = build_cache(cases, tmp_path / "c", MODEL, None, 128)
    assert (resized.encoded, resized.removed_stale) == (4, 4)
    with pytest.raises(UserError, match="128 px, not 64 px"):
        FeatureCache(tmp_path / "c").check_model(MODEL, SIZE)
    with pytest.raises(UserError, match="built with model"):
        FeatureCache(tmp_path / "c").check_model("sam2-hiera-small")


def test_cached_features_match_a_fresh_encoder_pass(phantom_2d, cache_2d):
    from samadapt.fewshot.cache import build_frozen_model
    from samadapt.fewshot.items import model_input, unit_images

    case = load_dataset(phantom_2d).cases[0]
    model = build_frozen_model(MODEL, None, SIZE)
    pixels, _ = model_input(unit_images(case)[0], SIZE)
    with torch.no_grad():
        fresh = model.encode(pixels[None])
    cached = FeatureCache(cache_2d).load(case.id)
    torch.testing.assert_close(cached.embedding, fresh.embedding, atol=2e-2, rtol=1e-2)


def test_training_refuses_a_cache_whose_weights_file_was_replaced(phantom_2d, tmp_path, monkeypatch):
    from samadapt.fewshot.cache import build_frozen_model

    monkeypatch.chdir(tmp_path)
    Path("weights.pt").write_bytes(b"the weights the features were made with")
    cases = load_dataset(phantom_2d).cases[:2]
    # The encoder is passed in, so the cache records the file's path and fingerprint without loading it.
    build_cache(cases, "cache", MODEL, "weights.pt", SIZE, model=build_frozen_model(MODEL, None, SIZE))
    cache = FeatureCache("cache")
    assert cache.identity.weights == str(tmp_path / "weights.pt")  # resolved, not relative to the caller
    assert cache.check_weights() == str(tmp_path / "weights.pt")
    Path("weights.pt").write_bytes(b"other weights under the same name")
    config = FewShotConfig(shots=2, epochs=1, prototypes_per_class=1)
    with pytest.raises(UserError, match="weights changed since the feature cache was built") as error:
        train_fewshot(cases, load_dataset(phantom_2d).class_names, "cache", "run", config, progress=False)
    assert str(tmp_path / "weights.pt") in str(error.value) and "\n" not in str(error.value)
    Path("weights.pt").unlink()
    with pytest.raises(UserError, match="are gone"):
        FeatureCache("cache").check_weights()


# ----------------------------------------------------------------------------------- training
def test_training_never_runs_the_encoder_and_saves_a_usable_run(phantom_2d, cache_2d, tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(SegmentAnything, "encode", lambda self, *a, **k: calls.append(1) or 1 / 0)
    dataset = load_dataset(phantom_2d)
    config = FewShotConfig(shots=2, epochs=2, prototypes_per_class=2)
    summary = train_fewshot(dataset.cases, dataset.class_names, cache_2d, tmp_path / "run", config, progress=False)
    assert calls == [] and summary["global_step"] == 2
    assert len(summary["support"]["items"]) == 2
    assert (tmp_path / "run" / "support.json").is_file()
    again, _ = select_shots(dataset.cases, dataset.class_names, 2, seed=0)
    assert [i.item_id for i in again] == summary["support"]["items"]
    monkeypatch.undo()
    out = tmp_path / "pred"
    assert main(["fewshot", "predict", "--model", str(tmp_path / "run"), "--input", str(phantom_2d.parent / "images"),
                 "--out", str(out)]) == 0
    from samadapt.data.io import read_image

    labels = read_image(out / "A0001_mask.png", keep_indices=True)  # the names `samadapt predict` writes
    assert labels.shape == (64, 64) and labels.max() <= 3
    assert (out / "A0001_overlay.png").is_file()
    assert json.loads((out / "classes.json").read_text()) == {"0": "background", **{
        str(k): name for k, name in enumerate(dataset.class_names, start=1)}}
    capsys.readouterr()
    # the fine-tuning commands name the command that reads a few-shot run
    for command in (["predict", "--input", str(phantom_2d.parent / "images" / "A0001.png"), "--out", str(tmp_path / "p")],
                    ["evaluate", "--data", str(phantom_2d)]):
        assert main([*command, "--model", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "this is a few-shot run: use `samadapt fewshot predict --model RUN`" in err[0]


def test_bad_support_inputs_are_user_errors(phantom_2d, cache_2d, tmp_path, capsys):
    dataset = load_dataset(phantom_2d)
    with pytest.raises(UserError, match="more than the 4 labelled images"):
        select_shots(dataset.cases, dataset.class_names, 5, 0)
    with pytest.raises(UserError, match="has no pixel of extra"):
        select_shots(dataset.cases, [*dataset.class_names, "extra"], 1, 0)
    with pytest.raises(UserError, match="built with model"):
        train_fewshot(dataset.cases, dataset.class_names, cache_2d, tmp_path / "r", FewShotConfig(shots=1, epochs=1),
                      model_name="sam2-hiera-small", progress=False)
    code = main(["fewshot", "train", "--data", str(phantom_2d), "--cache", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "r2"), "--shots", "2"])
    assert code == 2 and "not a few-shot feature cache" in capsys.readouterr().err
    code = main(["fewshot", "predict", "--model", str(tmp_path / "nothing"), "--input", str(phantom_2d.parent / "images"),
                 "--out", str(tmp_path / "p")])
    assert code == 2


def test_nifti_prediction_keeps_the_volume_geometry(tmp_path, capsys):
    import nibabel as nib

    description = generate_phantoms(tmp_path / "ph3d", n=2, size=64, kind="anatomy", dims="3d", depth=6)
    cache, run, out = tmp_path / "cache", tmp_path / "run", tmp_path / "pred"
    assert main(["fewshot", "cache", "--model", MODEL, "--image-size", str(SIZE), "--data", str(description),
                 "--out", str(cache)]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("samadapt: warning:")]
    assert len(warning) == 1 and "RANDOM, UNTRAINED weights" in warning[0] and "--init sam2:PATH" in warning[0]
    assert main(["fewshot", "train", "--data", str(description), "--cache", str(cache), "--out", str(run),
                 "--shots", "2", "--epochs", "1"]) == 0
    source = tmp_path / "oblique.nii.gz"
    affine = np.array([[0, -1.5, 0, 10], [2.0, 0, 0, -5], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    data = nib.load(str(description.parent / "images" / "A0001.nii.gz")).get_fdata()[:, :48]
    nib.save(nib.Nifti1Image(data.astype(np.int16), affine), str(source))
    assert main(["fewshot", "predict", "--model", str(run), "--input", str(source), "--out", str(out),
                 "--largest-component"]) == 0
    written = nib.load(str(out / "oblique_mask.nii.gz"))
    assert written.shape == data.shape
    np.testing.assert_allclose(written.affine, affine)
    assert nib.aff2axcodes(written.affine) == nib.aff2axcodes(affine)
    assert np.asarray(written.dataobj).dtype == np.uint8


@pytest.mark.slow
def test_two_shots_learn_a_phantom_structure(tmp_path):
    """The core structure of the anatomy phantom, learned from 2 shots on a random-weight encoder."""
    from samadapt.fewshot.evaluate import evaluate_run
    from samadapt.fewshot.predict import load_fewshot_run

    description = generate_phantoms(tmp_path / "ph", n=5, size=128, kind="anatomy")
    dataset = load_dataset(description)
    build_cache(dataset.cases, tmp_path / "cache", MODEL, None, 128)
    config = FewShotConfig(shots=2, epochs=120, lr=2e-3)
    train_fewshot(dataset.cases[:2], ["core"], tmp_path / "cache", tmp_path / "run", config, progress=False)
    result = evaluate_run(load_fewshot_run(tmp_path / "run"), dataset.cases[2:], tmp_path / "eval", overlays=False)
    dice = [r["dice"] for r in result.rows]
    assert len(dice) == 3 and np.mean(dice) > 0.8 and min(dice) > 0.7, dice


def test_prompt_baselines_put_points_inside_components_and_report(phantom_2d, tmp_path):
    from samadapt.fewshot.prompt_baselines import component_prompts

    mask = np.zeros((20, 20), dtype=np.uint8)
    mask[2:6, 2:12] = 1
    mask[10:18, 10:14] = 1
    mask[1:3, 15:19] = 2
    points = component_prompts(mask, 2, "point")
    assert [c for c, _ in points] == [1, 1, 2]
    assert all(mask[int(y), int(x)] == c for c, (x, y) in points)
    assert component_prompts(mask, 2, "box")[2] == (2, [15.0, 1.0, 19.0, 3.0])
    report = tmp_path / "box"
    assert main(["fewshot", "baseline", "--data", str(phantom_2d), "--out", str(report), "--prompt", "box",
                 "--image-size", str(SIZE)]) == 0
    assert (report / "summary.json").is_file()
    assert main(["fewshot", "baseline", "--data", str(phantom_2d), "--out", str(report), "--prompt", "lasso"]) == 2


@pytest.mark.realdata
@pytest.mark.slow
def test_hippocampus_volumes_round_trip(tmp_path):
    """Real MRI volumes: cache slices, train briefly, predict a volume in its own space."""
    import nibabel as nib

    from shared_data import shared_subdir  # tests/shared_data.py

    source = shared_subdir("hippocampus")
    names = sorted(p.name for p in (source / "imagesTr").iterdir())[:3]
    for sub in ("imagesTr", "labelsTr"):
        (tmp_path / "data" / sub).mkdir(parents=True)
        for name in names:
            (tmp_path / "data" / sub / name).symlink_to(source / sub / name)
    data, cache, run, out = tmp_path / "data", tmp_path / "cache", tmp_path / "run", tmp_path / "pred"
    assert main(["fewshot", "cache", "--image-size", str(SIZE), "--data", str(data), "--out", str(cache)]) == 0
    assert main(["fewshot", "train", "--data", str(data), "--cache", str(cache), "--out", str(run),
                 "--shots", "2", "--epochs", "1"]) == 0
    volume = data / "imagesTr" / names[0]
    assert main(["fewshot", "predict", "--model", str(run), "--input", str(volume), "--out", str(out)]) == 0
    original, written = nib.load(str(volume)), nib.load(str(out / names[0].replace(".nii", "_mask.nii", 1)))
    assert written.shape == original.shape[:3]
    np.testing.assert_allclose(written.affine, original.affine)
