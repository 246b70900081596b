"""The GPU readiness check (benchmarks/gpu_check.py) runs every stage on the CPU, so it cannot rot
while no GPU is at hand; a failing stage is recorded and the others still run."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check

REPO = Path(__file__).resolve().parents[1]
TRAINING = ("finetune_fp32", "finetune_bf16", "pretrain_sparse", "fewshot_train", "torchrun_resume")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@pytest.mark.slow
def test_every_stage_passes_on_cpu_with_finite_numbers(tmp_path):
    report_path = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu", "--work",
                           str(tmp_path / "work"), "--json", str(report_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads(report_path.read_text())
    assert report["ok"] and report["device"] == "cpu"
    stages = report["stages"]
    assert set(stages) == set(gpu_check.STAGES) - {"install"}  # install runs only with --wheels
    for name, stage in stages.items():
        assert stage["status"] == "ok", (name, stage["error"])
        assert _finite(stage["seconds"]) and stage["seconds"] > 0, name
        if name != "data":  # no GPU here: no GPU memory, but every worker's own RSS
            assert stage["peak_gpu_mb"] is None, name
            assert _finite(stage["peak_rss_mb"]) and stage["peak_rss_mb"] > 0, name
    for name in TRAINING:
        assert _finite(stages[name]["steps_per_s"]) and stages[name]["steps_per_s"] > 0, name
        assert _finite(stages[name]["images_per_s"]) and stages[name]["images_per_s"] > 0, name
    for name in ("fewshot_cache", "predict_fast"):
        assert _finite(stages[name]["images_per_s"]) and stages[name]["images_per_s"] > 0, name
    assert _finite(stages["predict_fast"]["bf16"]["images_per_s"])
    resumed = stages["torchrun_resume"]
    assert resumed["backend"] == "gloo" and 0 < resumed["killed_at_step"] < resumed["final_step"]
    errors = report["parity_errors"]
    assert set(errors) >= {"encoder_plain", "encoder_fast", "decoder_logits"}
    assert all(_finite(v) and v <= gpu_check.PARITY_TOLERANCE for v in errors.values()), errors
    assert "GPU readiness check (cpu): all stages passed" in proc.stdout


def test_a_failing_stage_is_recorded_and_the_others_still_run(tmp_path):
    check = gpu_check.Check("cpu", tmp_path, budget_s=60, wheels=None, keep=True)

    def broken(log):
        raise gpu_check.StageError("samadapt: error: something broke")

    check.stage("data", broken)
    check.stage("finetune_fp32", lambda log: {"images_per_s": 1.0})  # needs data: skipped
    check.stage("parity", lambda log: {"errors": {}})
    assert check.results["data"]["status"] == "failed"
    assert check.results["data"]["error"] == "samadapt: error: something broke"
    assert check.results["finetune_fp32"] == {"status": "skipped", "error": "needs stage data", "seconds": 0.0}
    assert check.results["parity"]["status"] == "ok"


def test_on_cuda_a_stage_that_left_the_gpu_unused_fails(tmp_path):
    check = gpu_check.Check("cuda", tmp_path, budget_s=60, wheels=None, keep=True)
    check.stage("parity", lambda log: {"errors": {}, "peak_gpu_mb": None})
    assert check.results["parity"]["status"] == "failed"
    assert "ran on the CPU" in check.results["parity"]["error"]


def test_error_line_and_rates():
    stderr = "Traceback (most recent call last):\n  ...\nRuntimeError: boom\n"
    assert gpu_check._error_line(stderr, 1) == "RuntimeError: boom"
    assert gpu_check._error_line("x\nsamadapt: error: bad input\nmore\n", 2) == "samadapt: error: bad input"
    assert gpu_check._error_line("", 137) == "exit code 137"
    rates = gpu_check._rates({"steps": [[9.0, 8], [0.5, 8], [0.5, 8], [1.0, 8]]})  # first step: warm-up
    assert rates["steps_per_s"] == 2.0 and rates["images_per_s"] == 16.0 and rates["steps"] == 4


def test_installed_dependencies_satisfy_pyproject():
    assert gpu_check.missing_requirements() == []
