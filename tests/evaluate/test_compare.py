"""Paired comparison: the bootstrap CI covers the true difference; pairing, errors and outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from samadapt.errors import UserError
from samadapt.evaluate.compare import MEAN_OVER_CLASSES, compare_runs, paired_statistics


def _write_run(folder, values, classes=("c1",), metric="dice"):
    folder.mkdir(parents=True)
    lines = [f"case_id,class,{metric},gt_pixels,pred_pixels"]
    for case, value in values.items():
        for cls in classes:
            lines.append(f"{case},{cls},{value},10,10")
    (folder / "per_case.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_ci_contains_true_difference_on_synthetic_pairs():
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(20):
        baseline = rng.uniform(0.5, 0.9, 60)
        other = baseline + 0.05 + rng.normal(0, 0.04, 60)  # true mean difference 0.05
        stats = paired_statistics(baseline, other, n_resamples=2000, seed=trial)
        covered += stats["ci_low"] <= 0.05 <= stats["ci_high"]
        assert stats["ci_low"] < stats["mean_difference"] < stats["ci_high"]
        assert stats["wilcoxon_p"] < 1e-3
    assert covered >= 17  # 95% nominal coverage; 17/20 leaves room for chance


def test_seeded_and_nan_pairs_dropped():
    baseline = np.array([0.5, 0.6, np.nan, 0.7, 0.4, 0.55])
    other = np.array([0.6, 0.65, 0.9, 0.72, 0.5, np.nan])
    first = paired_statistics(baseline, other, n_resamples=1000, seed=3)
    assert first == paired_statistics(baseline, other, n_resamples=1000, seed=3)
    assert first["n_pairs"] == 4 and first["n_dropped"] == 2
    assert first["mean_difference"] == pytest.approx(np.mean([0.1, 0.05, 0.02, 0.1]))


def test_identical_runs_give_zero_difference_and_p_one():
    stats = paired_statistics([0.5, 0.7, 0.9], [0.5, 0.7, 0.9])
    assert (stats["mean_difference"], stats["ci_low"], stats["ci_high"], stats["wilcoxon_p"]) == (0.0, 0.0, 0.0, 1.0)


def test_compare_runs_writes_tables_and_plot(tmp_path):
    rng = np.random.default_rng(0)
    base = {f"case{i}": v for i, v in enumerate(rng.uniform(0.4, 0.8, 30))}
    better = {case: v + 0.1 for case, v in base.items()}
    better["only_here"] = 0.99  # not in the baseline: left out of the pairing
    run_a = _write_run(tmp_path / "base_run" / "eval", base, classes=("c1", "c2"))
    run_b = _write_run(tmp_path / "eval_b", better, classes=("c1", "c2"))
    result = compare_runs([tmp_path / "base_run", run_b], tmp_path / "cmp", n_resamples=1000)
    assert result["n_common_cases"] == 30
    assert [r["label"] for r in result["runs"]] == ["base_run", "eval_b"]
    rows = {r["class"]: r for r in result["comparisons"]}
    assert set(rows) == {"c1", "c2", MEAN_OVER_CLASSES}
    assert rows[MEAN_OVER_CLASSES]["mean_difference"] == pytest.approx(0.1)
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["comparisons"][0]["run"] == "eval_b"
    assert "| eval_b | base_run | mean over classes | 30 |" in (tmp_path / "cmp" / "compare.md").read_text()
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 1000
    assert run_a.is_dir()
    assert saved["warnings"] == [] and not any(row["few_pairs"] for row in saved["comparisons"])


def test_few_paired_cases_warn_that_ci_and_p_are_unreliable(tmp_path, capsys):
    few = {f"case{i}": 0.5 + 0.01 * i for i in range(4)}
    run_a = _write_run(tmp_path / "a", few)
    run_b = _write_run(tmp_path / "b", {case: v + 0.1 for case, v in few.items()})
    result = compare_runs([run_a, run_b], tmp_path / "cmp", n_resamples=200)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fewer than 10 paired cases (smallest n = 4)" in err[0] and "unreliable" in err[0]
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["warnings"] == result["warnings"] and len(saved["warnings"]) == 1
    assert all(row["few_pairs"] for row in saved["comparisons"])
    assert "**Warning:**" in (tmp_path / "cmp" / "compare.md").read_text()


def test_compare_errors(tmp_path):
    run_a = _write_run(tmp_path / "a", {"x": 0.5})
    run_b = _write_run(tmp_path / "b", {"y": 0.5})
    with pytest.raises(UserError, match="no \\(case, class\\) in common"):
        compare_runs([run_a, run_b], tmp_path / "out")
    with pytest.raises(UserError, match="metric 'hd95' not in the table; available: dice"):
        compare_runs([run_a, run_a], tmp_path / "out", metric="hd95")
    with pytest.raises(UserError, match="at least two runs"):
        compare_runs([run_a], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no per_case.csv"):
        compare_runs([run_a, tmp_path / "empty"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_default_resamples_ci_contains_true_difference():
    rng = np.random.default_rng(7)
    baseline = rng.uniform(0.3, 0.9, 40)
    other = baseline - 0.03 + rng.normal(0, 0.02, 40)
    stats = paired_statistics(baseline, other)  # 10k resamples, seed 0
    assert stats["ci_low"] <= -0.03 <= stats["ci_high"]
    assert stats["ci_high"] < 0


@pytest.mark.parametrize("folders, expected", [
    (["a/run1/eval", "a/run2/eval"], ["run1", "run2"]),
    (["x/lora/eval_test", "x/all/eval_test"], ["lora/eval_test", "all/eval_test"]),
    (["p/fold0/eval", "q/fold0/eval"], ["p/fold0", "q/fold0"]),
    (["p/fold0/eval", "q/fold0/eval", "q/fold1/eval"], ["p/fold0", "q/fold0", "fold1"]),
    (["a/run1/eval", "a/run1/eval"], ["run1 (1)", "run1 (2)"]),
], ids=["eval-takes-its-run", "parent-tells-apart", "two-parents", "only-clashes-grow", "same-folder"])
def test_run_labels_are_short_and_unique(tmp_path, folders, expected):
    from samadapt.evaluate.compare import _run_labels

    tables = [tmp_path / f / "per_case.csv" for f in folders]
    assert _run_labels([tmp_path / f for f in folders], tables) == expected
