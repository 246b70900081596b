"""`samadapt demo`: the quick run goes through every stage and writes a self-contained report with
real numbers; bad input fails in one line and leaves no output behind."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from samadapt.cli import main

NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?$")


class ReportParser(HTMLParser):
    """Collects <img> sources, the text of every <td> with its class, and external references."""

    def __init__(self):
        super().__init__()
        self.images, self.cells, self.external = [], [], []
        self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag in ("link", "script") or (tag == "a" and str(attrs.get("href", "")).startswith("http")):
            self.external.append((tag, attrs))
        if tag == "td":
            self._cell = [attrs.get("class", ""), ""]

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append((self._cell[0], self._cell[1].strip()))
            self._cell = None


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "runs" / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--threads", "1"]) == 0
    return out


@pytest.mark.slow
def test_quick_demo_writes_every_stage(quick_demo):
    out = quick_demo
    results = json.loads((out / "results.json").read_text())
    assert [s["name"] for s in results["stages"]] == [
        "data", "MAE pre-training", "fine-tuning", "evaluation", "paired comparison", "few-shot", "report"]
    assert all(s["wall_seconds"] >= 0 and s["cpu_seconds"] >= 0 for s in results["stages"])
    assert (out / "pretrain" / "encoder" / "samadapt.json").is_file()
    assert list((out / "pretrain" / "recon").glob("epoch-*.png"))
    for label in ("random-init", "mae-init"):
        run = out / "finetune" / label
        assert (run / "model" / "samadapt.json").is_file() and (run / "epoch.csv").is_file()
        assert (run / "eval" / "per_case.csv").is_file()
        dice = results["evaluation"][label]["summary"]["mean_over_classes"]["dice"]["mean"]
        assert 0.0 <= dice <= 1.0
    assert json.loads((out / "compare" / "compare.json").read_text())["n_common_cases"] >= 1
    assert results["finetune"]["mae-init"]["init"].startswith("mae:")
    sweeps = json.loads((out / "fewshot" / "sweep.json").read_text())
    assert [s["dims"] for s in sweeps] == ["2d", "3d"]
    assert [r["shots"] for r in sweeps[0]["rows"]] == [1, 2]
    csv_lines = (out / "fewshot" / "sweep.csv").read_text().splitlines()
    assert csv_lines[0].startswith("sweep,dims,shots") and len(csv_lines) > 3


@pytest.mark.slow
def test_quick_demo_report_is_self_contained_with_numbers(quick_demo):
    text = (quick_demo / "report.html").read_text(encoding="utf-8")
    parser = ReportParser()
    parser.feed(text)
    assert not parser.external, "report must not load anything from outside"
    assert "nan" not in {c[1].lower() for c in parser.cells} and "None" not in text
    numeric = [value for css, value in parser.cells if css == "num"]
    assert len(numeric) >= 40
    bad = [value for value in numeric if not NUMBER.match(value)]
    assert not bad, f"metric cells that are not numbers: {bad[:5]}"
    # every <td> of the metric tables is a number or an explicit n/a, never a placeholder
    assert not [v for css, v in parser.cells if css == "na" and v not in ("n/a", "")]
    # every picture is embedded and decodes as a PNG
    assert len(parser.images) >= 8
    for source in parser.images:
        assert source.startswith("data:image/png;base64,"), source[:60]
        picture = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
        assert picture.format == "PNG" and picture.width > 10 and picture.height > 10
    for heading in ("Summary", "pre-training", "Fine-tuning", "held-out", "Paired comparison", "Few-shot", "Run time"):
        assert heading in text


def test_demo_missing_data_fails_in_one_line_without_output(tmp_path, capsys):
    out = tmp_path / "runs" / "demo"
    assert main(["demo", "--data", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("samadapt: error:") and "nowhere" in err[0]
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_demo_refuses_unlabeled_data_and_foreign_output(tmp_path, capsys):
    from samadapt.data.phantoms import generate_phantoms

    images = tmp_path / "images_only"
    images.mkdir()
    generate_phantoms(tmp_path / "ph", n=2, size=64, seed=0)
    shutil.copy(tmp_path / "ph" / "images" / "P0001-1.png", images / "a.png")
    assert main(["demo", "--data", str(images), "--out", str(tmp_path / "o1")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "o1").exists()

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["demo", "--quick", "--out", str(foreign)]) == 2
    assert "not written by `samadapt demo`" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_report_screenshot_renders(quick_demo, tmp_path):
    """Render the report in headless Chromium (skipped without it); the page must not be blank."""
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("chromium not installed")
    script = Path(__file__).resolve().parents[1] / "scripts" / "screenshot_report.sh"
    shot = tmp_path / "report.png"
    subprocess.run([str(script), str(quick_demo / "report.html"), str(shot), "3000"], check=True, timeout=120)
    picture = Image.open(shot).convert("L")
    assert picture.size == (1200, 3000)
    assert len(set(picture.resize((60, 150)).getdata())) > 20  # text and figures, not an empty page


@pytest.mark.parametrize("native", [True, False])
def test_full_demo_uses_bf16_only_where_it_is_fast(native, monkeypatch):
    from samadapt.demo import pipeline
    from samadapt.demo.budget import FULL, QUICK
    from samadapt.modeling.fast import encoder

    monkeypatch.setattr(encoder, "native_bf16_cpu", lambda: native)
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pipeline.finetune_precision(FULL) == ("bf16" if native else "auto")
    assert pipeline.finetune_precision(QUICK) == "auto"


def test_small_p_values_are_not_printed_as_zero():
    from samadapt.demo.headline import _fmt_p

    assert _fmt_p(0.00002) == "< 0.001" and _fmt_p(0.267) == "0.267" and _fmt_p(float("nan")) == "n/a"


def test_full_budget_is_in_the_label_scarce_regime():
    """Few labelled training frames, at least 10x as many unlabeled ones, MAE below the fine-tuning size."""
    from samadapt.demo.budget import FULL

    assert 8 <= FULL.fa_train <= 24
    assert FULL.fa_unlabeled >= 10 * (FULL.fa_train + FULL.fa_val)
    assert FULL.fa_test >= FULL.fa_train  # held-out frames are free: enough of them for a paired CI
    assert FULL.pretrain_size <= FULL.finetune_size


def test_phantom_split_has_the_budget_counts(tmp_path):
    import dataclasses

    from samadapt.demo.budget import QUICK
    from samadapt.demo.pipeline import DemoInput, make_data

    budget = dataclasses.replace(QUICK, fa_train=6, fa_val=2, fa_test=4, fa_unlabeled=3)
    info = make_data(tmp_path, budget, DemoInput(None), seed=0)
    assert info["cases"] == {"train": 6, "val": 2, "test": 4}
    assert info["unlabeled"] == 3 and len(list((tmp_path / "data" / "fa" / "unlabeled").iterdir())) == 3


@pytest.mark.slow
def test_quick_demo_records_each_arms_recipe_and_both_comparisons(quick_demo):
    results = json.loads((quick_demo / "results.json").read_text())
    assert results["finetune"]["random-init"]["recipe"]["name"] == "scratch"
    mae = results["finetune"]["mae-init"]["recipe"]
    assert mae["name"] == "pretrained" and mae["layer_decay"] and mae["encoder_lr"] < mae["lr"]
    assert "comparisons" in results["compare"]


def test_an_interrupted_stage_stops_the_demo():
    from samadapt.demo.pipeline import stop_if_interrupted

    assert stop_if_interrupted({"status": "completed"}) == {"status": "completed"}
    with pytest.raises(KeyboardInterrupt):
        stop_if_interrupted({"status": "interrupted"})


@pytest.mark.parametrize("low, high, word", [(0.01, 0.05, "helped"), (-0.05, -0.01, "hurt"),
                                             (-0.02, 0.03, "No clear difference"), (float("nan"), float("nan"), "Too few")])
def test_report_says_whether_pretraining_helped(low, high, word):
    from samadapt.report.demo_report import verdict

    comparison = {"comparisons": [{"class": "mean over classes", "ci_low": low, "ci_high": high}]}
    assert word in verdict(comparison)
