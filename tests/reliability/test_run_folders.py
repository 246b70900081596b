"""Run folders as a unit (engine/run_folder.py), provenance by content (engine/provenance.py), the
few-shot cache's deletions, and the umask of written files. Tiny sizes: the whole file runs in
seconds (no model is trained)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from samadapt.engine.run_folder import INCOMPLETE_FILE, LOCK_FILE, refuse_incomplete, run_folder
from samadapt.errors import UserError
from test_bad_inputs import assert_one_line_error, run_cli, tree_state


def test_a_second_writer_is_refused_in_one_line(bad_world, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(bad_world)
    out = tmp_path / "busy"
    with run_folder(out):
        before = tree_state(tmp_path)
        code, _, err = run_cli(["predict", "--input", "bad/ok.png", "--out", str(out)], capsys)
        assert_one_line_error(code, err, "another samadapt command is writing to this folder")
        assert tree_state(tmp_path) == before
        with pytest.raises(UserError, match="still being written"):
            refuse_incomplete(out)
    assert not (out / INCOMPLETE_FILE).exists()  # finished: complete


def test_a_failure_after_writing_leaves_the_folder_marked_incomplete(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with run_folder(out):
            (out / "half.csv").write_text("step\n1\n")
            raise RuntimeError("killed halfway")
    assert (out / INCOMPLETE_FILE).is_file()
    with pytest.raises(UserError, match="is incomplete"):
        refuse_incomplete(out / "model")  # a reader of the run's model folder refuses it too


def test_a_failure_before_writing_changes_nothing(tmp_path):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine\n")
    before = tree_state(tmp_path)
    for out in (existing, tmp_path / "new" / "deeper"):
        with pytest.raises(UserError):
            with run_folder(out):
                raise UserError("refused --resume")
    assert tree_state(tmp_path) == before


def test_staging_left_by_a_killed_run_is_cleaned_by_the_next(tmp_path):
    out = tmp_path / "preds"
    (tmp_path / ".preds.abcd1234.staging").mkdir()
    out.mkdir()
    (out / ".summary.json.abcd1234.tmp").write_text("{")
    (out / ".notes.tmp").write_text("a user's file with a similar name\n")
    with run_folder(out):
        pass
    assert not (tmp_path / ".preds.abcd1234.staging").exists()
    assert not (out / ".summary.json.abcd1234.tmp").exists()
    assert (out / ".notes.tmp").exists()


def test_the_cache_deletes_only_files_it_wrote(bad_world, tmp_path, monkeypatch, capsys):
    """Regression: `fewshot cache --out userdir` removed userdir/features/important.csv."""
    monkeypatch.chdir(bad_world)
    out = tmp_path / "userdir"
    (out / "features").mkdir(parents=True)
    (out / "features" / "important.csv").write_text("keep\n")
    for size in ("64", "128"):  # the second build makes every earlier feature file stale
        code, stdout, err = run_cli(["fewshot", "cache", "--data", "anat2d", "--out", str(out), "--image-size", size],
                                    capsys)
        assert code == 0, err
    assert "4 stale removed" in stdout
    assert (out / "features" / "important.csv").read_text() == "keep\n"
    manifest = json.loads((out / "cache.json").read_text())
    assert manifest["complete"] is True and len(manifest["files"]) == 4
    assert sorted(p.name for p in (out / "features").iterdir()) == sorted(
        [Path(f).name for f in manifest["files"]] + ["important.csv"])


def test_an_interrupted_cache_build_keeps_and_reuses_what_it_finished(bad_world, tmp_path, monkeypatch):
    from samadapt.data.dataset import load_dataset
    from samadapt.fewshot import cache as cache_module

    cases = load_dataset(bad_world / "anat2d").cases
    calls = {"n": 0}
    real = cache_module._write_features

    def dies_on_the_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_module, "_write_features", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        cache_module.build_cache(cases, tmp_path, "sam2-hiera-tiny", None, 64, batch_size=1)
    assert json.loads((tmp_path / "cache.json").read_text())["complete"] is False
    with pytest.raises(UserError, match="incomplete"):
        cache_module.FeatureCache(tmp_path)
    monkeypatch.setattr(cache_module, "_write_features", real)
    report = cache_module.build_cache(cases, tmp_path, "sam2-hiera-tiny", None, 64, batch_size=1)
    assert (report.reused, report.encoded) == (2, 2)
    cache_module.FeatureCache(tmp_path)


def test_outputs_follow_the_umask(bad_world, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(bad_world)
    previous = os.umask(0o002)  # a group-shared folder
    try:
        code, _, err = run_cli(["fewshot", "cache", "--data", "anat2d", "--out", str(tmp_path / "c"),
                                "--image-size", "64"], capsys)
        assert code == 0, err
        code, _, err = run_cli(["data", "split", "fa", "--folds", "2", "--out", str(tmp_path / "s.json")], capsys)
        assert code == 0, err
    finally:
        os.umask(previous)
    files = [tmp_path / "s.json", tmp_path / "c" / "cache.json", *(tmp_path / "c" / "features").iterdir()]
    assert {oct(f.stat().st_mode & 0o777) for f in files} == {oct(0o664)}


def test_a_changed_splits_file_is_refused_by_evaluate_and_compare(bad_world, tmp_path, monkeypatch, capsys):
    """Regression: after `data split` rewrote the file, `evaluate --model RUN` scored training cases."""
    from samadapt.engine.provenance import check_evaluation_inputs, input_hashes

    monkeypatch.chdir(tmp_path)
    shutil.copytree(bad_world / "fa", "fa")
    recorded = input_hashes(splits="fa/splits.json", data="fa")
    check_evaluation_inputs(recorded, "run", splits="fa/splits.json", data="fa")  # unchanged: passes
    code, _, err = run_cli(["data", "split", "fa", "--folds", "2", "--seed", "7", "--out", "fa/splits.json"], capsys)
    assert code == 0, err
    with pytest.raises(UserError, match=r"fa/splits.json: differs from the file the run run was made with"):
        check_evaluation_inputs(recorded, "run", splits="fa/splits.json", data="fa")
    for name, splits in (("a", recorded["splits_sha256"]), ("b", "0" * 64)):
        Path(name).mkdir()
        (Path(name) / "per_case.csv").write_text("case_id,class,dice\nc1,x,0.5\nc2,x,0.7\n")
        (Path(name) / "summary.json").write_text(json.dumps({"inputs": {"splits_sha256": splits, "part": "test"}}))
    code, _, err = run_cli(["compare", "a", "b", "--out", "cmp", "--resamples", "100"], capsys)
    assert_one_line_error(code, err, "b/summary.json: was scored on other cases than a")
    assert not Path("cmp").exists() and not (Path("a") / LOCK_FILE).exists()


def test_an_unreadable_input_is_one_line(bad_world, monkeypatch, capsys):
    """As root every file is readable, so the refusal of the operating system is simulated."""
    import nibabel

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.chdir(bad_world)
    monkeypatch.setattr(nibabel, "load", refuse)
    before = tree_state(bad_world)
    code, _, err = run_cli(["fewshot", "cache", "--data", "anat3d", "--out", "cache", "--image-size", "64"], capsys)
    assert_one_line_error(code, err, "anat3d/images/A0001.nii.gz")
    assert "permission denied" in err.lower()
    assert tree_state(bad_world) == before


def test_a_rewritten_splits_file_is_refused_by_resume_and_evaluate(bad_world, tmp_path, monkeypatch, capsys):
    """Regression: runs recorded the splits file by path only; a rewritten file leaked training cases."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(bad_world / "fa", "fa")
    train = ["finetune", "--data", "fa", "--splits", "fa/splits.json", "--out", "run", "--model", "unet",
             "--train", "all", "--init", "random", "--image-size", "64", "--epochs", "1"]
    code, _, err = run_cli(train, capsys)
    assert code == 0, err
    assert json.loads(Path("run/inputs.json").read_text())["splits_sha256"]
    code, _, err = run_cli(["data", "split", "fa", "--folds", "2", "--seed", "3", "--out", "fa/splits.json"], capsys)
    assert code == 0, err
    before = tree_state(tmp_path)
    code, _, err = run_cli([*train[:-1], "2", "--resume"], capsys)
    assert_one_line_error(code, err, "fa/splits.json: differs from the file the run run was made with")
    code, _, err = run_cli(["evaluate", "--model", "run", "--data", "fa", "--part", "test", "--out", "ev"], capsys)
    assert_one_line_error(code, err, "splits.json: differs from the file the run run was made with")
    assert tree_state(tmp_path) == before  # the refused resume and evaluation changed nothing
