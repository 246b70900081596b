"""report.html of `samadapt demo`: what was done, the numbers, and the pictures behind them.

Written for a clinical reader: each section opens with a short plain explanation, scores are
fractions between 0 and 1 (Dice 0 = no overlap with the reference outline, 1 = identical), times
are seconds. The figures are drawn here from the CSV/JSON files of the runs, which stay in the
output folder next to the report.
"""

from __future__ import annotations

from pathlib import Path

from samadapt.demo.headline import headline
from samadapt.report.figures import shots_plot, training_curves
from samadapt.report.html import esc, figure, number_cell, page, section, table, text_cell

REPORT_FILE = "report.html"
FIGURE_DIR = "report-figures"
TRAINED_PARTS = {  # finetune --train modes in words
    "all": "the whole model", "decoder": "the prompts and mask decoder", "encoder-decoder": "encoder and decoder",
    "lora": "LoRA adapters on the encoder, with the prompts and mask decoder",
}
METRIC_HELP = {
    "dice": "Dice: overlap of the model's outline with the reference (0 none, 1 perfect)",
    "iou": "IoU: overlap divided by union; stricter than Dice",
    "precision": "precision: share of the pixels the model marked that are truly the structure",
    "recall": "recall (sensitivity): share of the true structure's pixels the model found",
}
LEGEND = ('<p class="legend">Overlay colours: <span style="background:#ffe600"></span>model and reference agree'
          '<span style="background:#0072ff"></span>missed by the model (reference only)'
          '<span style="background:#ff8000"></span>false alarm (model only)</p>')


def _rel(out: Path, path) -> str:
    try:
        return str(Path(path).resolve().relative_to(out.resolve()))
    except ValueError:
        return str(path)


def _summary_section(results: dict) -> str:
    rows = []
    for what, value, note in headline(results):
        cell = number_cell(float(value)) if value not in ("n/a",) else '<td class="na">n/a</td>'
        if value.startswith(("+", "-")):
            cell = number_cell(float(value), signed=True)
        rows.append([text_cell(what), cell, text_cell(note)])
    body = table(["result", "value", "what it rests on"], rows)
    target = results.get("dice_target")
    if target is not None:
        best = max(results["evaluation"][k]["summary"]["mean_over_classes"]["dice"]["mean"] or 0.0
                   for k in results["evaluation"])
        verdict = ("ok", "reached") if best >= target else ("bad", "not reached")
        body += (f'<p>Target Dice ≥ {target} on held-out frames: <span class="{verdict[0]}">{verdict[1]}</span> '
                 f"(best model {best:.3f}).</p>")
    explanation = ("The most important numbers of this run. <b>Dice</b> measures how well the model's outline "
                   "matches the reference outline: 0 means no overlap, 1 means identical. Test cases were "
                   "never used for training or for choosing the model. The difference row tells whether "
                   "starting from the self-supervised (MAE) encoder helped; a 95% confidence interval that "
                   "excludes 0 means the difference is unlikely to be chance.")
    return section("Summary", explanation, body, "summary")


def _data_section(out: Path, results: dict) -> str:
    data = results["data"]
    cases = data["cases"]
    rows = [[text_cell(part), number_cell(int(cases[part]))] for part in ("train", "val", "test")]
    body = table(["part", "labelled cases"], rows)
    if data["mode"] == "phantoms":
        source = f"{data['unlabeled']} separate unlabeled frames"
    else:
        source = f"the dataset's own images ({results['pretrain']['images']}, labels not used)"
    body += f"<p>Structures to segment: {esc(', '.join(data['classes']))}. Pre-training uses {esc(source)}.</p>"
    if data.get("montage"):
        body += figure(data["montage"], "Example frames (top) and the same frames with the reference outline "
                       "of leakage in red (bottom).", width=960)
    if data["mode"] == "phantoms":
        explanation = ("No patient data is needed: the demo generates fluorescein-angiography-like frames "
                       "(<i>phantoms</i>) whose leakage areas are known exactly. Two frames (early and late "
                       "phase) come from each simulated eye; both frames of an eye always stay in the same "
                       "part (training, validation or test), as they would for a real patient.")
    else:
        explanation = (f"Your dataset <code>{esc(data['dataset'])}</code>, split by patient into training, "
                       "validation (to choose the best epoch) and test (scored once at the end).")
    return section("Data", explanation, body, "data")


def _pretrain_section(out: Path, results: dict, curves_png: Path) -> str:
    p = results["pretrain"]
    rows = [[text_cell("images (no labels used)"), number_cell(int(p["images"]))],
            [text_cell("image size (pixels)"), number_cell(int(p["image_size"]))],
            [text_cell("hidden share of each image"), number_cell(float(p["mask_ratio"]), 2)],
            [text_cell("epochs / optimiser steps"), text_cell(f"{p['epochs']} / {p['steps']}")],
            [text_cell("final reconstruction error"), number_cell(p["final_loss"])]]
    body = table(["setting", "value"], rows)
    body += figure(p.get("last_recon"), "Left: unlabeled frame. Middle: what the encoder saw (grey squares "
                   "hidden). Right: its reconstruction of the hidden parts after pre-training.", width=720)
    explanation = ("Before any label is used, the image encoder learns what these images look like: three "
                   "quarters of each image is hidden and the network is trained to fill it in "
                   "(<i>masked autoencoder</i>, MAE). Good reconstructions mean the encoder has learned the "
                   "typical structures of these images (for the phantoms: vessels, optic disc, bright leakage). "
                   "With the short budget of the demo, expect blurry reconstructions. The error is measured on "
                   "normalised pixel values (lower is better); its curve is the left panel of the "
                   "fine-tuning figure below.")
    return section("Step 1 — Self-supervised pre-training (no labels)", explanation, body, "pretrain")


def _finetune_section(out: Path, results: dict, curves_png: Path) -> str:
    rows = []
    for label, run in results["finetune"].items():
        recipe = run.get("recipe") or {}
        rows.append([text_cell(label), text_cell("random weights" if run["init"] == "random" else "MAE encoder"),
                     text_cell(_recipe_text(recipe)),
                     number_cell(int(run["epochs"])), number_cell(run["best_val_dice"]),
                     number_cell(float(run["seconds_per_epoch"]), 1),
                     number_cell(int(run["parameters"]["trainable"]))])
    body = table(["run", "starts from", "recipe", "epochs", "best validation Dice", "seconds per epoch",
                  "trained parameters"], rows)
    body += figure(curves_png, "Left: MAE reconstruction error per step. Middle: fine-tuning loss per epoch "
                   "(Dice + binary cross-entropy). Right: Dice on the validation cases after each epoch; the "
                   "epoch with the best validation Dice is kept.")
    budget = results["budget"]
    explanation = ("SAM2 normally needs a click or a box to know what to outline. Here it learns one "
                   f"<i>class prompt</i> per structure instead, so it outlines {esc(', '.join(results['data']['classes']))} "
                   "with no click at all. Two "
                   "models are trained with the same labelled frames and the same budget "
                   f"({budget['finetune_epochs']} epochs, {budget['finetune_size']} px, training "
                   f"{esc(TRAINED_PARTS.get(budget['finetune_train'], budget['finetune_train']))}): one from random "
                   "weights, one from the pre-trained encoder.")
    return section("Step 2 — Fine-tuning with labels", explanation, body, "finetune")


def _recipe_text(recipe: dict) -> str:
    """'scratch: lr 0.001' or 'pretrained: lr 0.001, encoder 0.0005, layer decay 0.75, warm-up 10%'."""
    if not recipe:
        return "n/a"
    parts = [f"lr {recipe['lr']:g}"]
    if recipe["encoder_lr"] != recipe["lr"]:
        parts.append(f"encoder {recipe['encoder_lr']:g}")
    if recipe.get("layer_decay"):
        parts.append(f"layer decay {recipe['layer_decay']:g}")
    parts.append(f"warm-up {recipe['warmup_fraction']:.0%}")
    return f"{recipe['name']}: " + ", ".join(parts)


def _comparison_rows(comparisons: list[dict]) -> list[list[str]]:
    return [[text_cell(row["class"]), number_cell(int(row["n_pairs"])), number_cell(row["mean_baseline"]),
             number_cell(row["mean_other"]), number_cell(row["mean_difference"], signed=True),
             number_cell(row["ci_low"], signed=True), number_cell(row["ci_high"], signed=True),
             number_cell(row["wilcoxon_p"], 4)] for row in comparisons]


def _metrics_rows(summary: dict) -> list[list[str]]:
    rows = []
    for metric in summary["metrics"]:
        stats = summary["mean_over_classes"][metric]
        rows.append([text_cell(METRIC_HELP.get(metric, metric)), number_cell(stats["mean"]), number_cell(stats["sd"]),
                     number_cell(int(stats["n"]))])
    return rows


def _evaluation_section(out: Path, results: dict) -> str:
    body = ""
    for label, evaluation in results["evaluation"].items():
        summary = evaluation["summary"]
        body += f"<h3>{esc(label)} — {summary['n_cases']} test cases</h3>"
        body += table(["metric (0 to 1, higher is better)", "mean", "sd", "cases"], _metrics_rows(summary))
        for name, stats in summary["per_class"].items():
            empty = stats["empty_cases"]
            if empty["gt_empty"]:
                body += (f"<p>Test cases without any {esc(name)} in the reference: {empty['gt_empty']} (the model "
                         f"correctly marked nothing in {empty['both_empty']} of them).</p>")
        pictures = {Path(p).name.split("_", 1)[0]: p for p in evaluation["overlays"]}
        body += '<div class="grid">' + "".join(
            figure(pictures.get(rank), f"{rank} case of {label} by Dice") for rank in ("worst", "median", "best")
        ) + "</div>"
    explanation = ("Each model outlines the test frames it has never seen, and its outline is compared with the "
                   "reference pixel by pixel. Means are over test cases (sd: standard deviation, the spread "
                   "between cases). A case with nothing to find and nothing found counts as a perfect 1. The "
                   "pictures show the worst, the typical (median) and the best case." + LEGEND)
    return section("Step 3 — Results on held-out test cases", explanation, body, "evaluation")


def _compare_section(out: Path, results: dict) -> str:
    comparison = results["compare"]
    columns = ["structure", "cases", "Dice, random init", "Dice, MAE init", "difference", "95% CI low",
               "95% CI high", "Wilcoxon p"]
    body = f"<p><b>{esc(verdict(comparison))}</b></p>"
    body += "<h3>All test cases</h3>" + table(columns, _comparison_rows(comparison["comparisons"]))
    if comparison.get("with_reference"):
        body += ("<h3>Only the test cases with something to find</h3>"
                 + table(columns, _comparison_rows(comparison["with_reference"]["comparisons"])))
    body += figure(comparison.get("png"), "Left: Dice of every test case for each model. Right: mean "
                   "difference (MAE init − random init) with its 95% confidence interval.", width=700)
    explanation = ("Both models are scored on the same test cases, so they can be compared case by case. The "
                   "difference is MAE init minus random init: positive means pre-training helped. The 95% "
                   "confidence interval comes from resampling the cases (bootstrap); the Wilcoxon p-value "
                   "tests whether the paired differences are centred on zero. With few test cases, wide "
                   "intervals are expected. The second table leaves out the cases whose reference is empty: "
                   "there, marking nothing scores a perfect 1, which can carry a difference on its own.")
    return section("Step 4 — Does pre-training help? Paired comparison", explanation, body, "compare")


def verdict(comparison: dict) -> str:
    """One sentence on the mean-over-classes difference: helped, hurt or no clear difference."""
    row = next((r for r in comparison["comparisons"] if r["class"] == "mean over classes"), None)
    if row is None or row["ci_low"] != row["ci_low"]:  # NaN: too few cases for an interval
        return "Too few paired test cases to tell whether pre-training helped."
    if row["ci_low"] > 0:
        return "MAE pre-training helped: the 95% confidence interval of the difference lies above zero."
    if row["ci_high"] < 0:
        return ("At this budget MAE pre-training hurt: the 95% confidence interval lies below zero. "
                "docs/results.md (MAE budget curve) shows how the difference moves with longer pre-training.")
    return "No clear difference at this budget: the 95% confidence interval includes zero."


def _fewshot_section(out: Path, results: dict, plot_png: Path) -> str:
    sweeps = results["fewshot"]["sweeps"]
    rows = []
    for sweep in sweeps:
        if sweep.get("skipped"):
            rows.append([text_cell(sweep["label"]), text_cell("skipped"), '<td class="na">n/a</td>',
                         '<td class="na">n/a</td>', text_cell(sweep["skipped"])])
            continue
        for row in sweep["rows"]:
            per_class = ", ".join(f"{k} {v:.2f}" for k, v in row["per_class_dice"].items() if v is not None)
            rows.append([text_cell(sweep["label"]), number_cell(int(row["shots"])), number_cell(row["dice"]["mean"]),
                         number_cell(row["dice"]["sd"]), text_cell(per_class)])
    body = figure(plot_png, "Mean Dice over structures on unseen cases, against the number of labelled shots "
                  "(error bars: sd over cases).", width=640)
    body += table(["data", "shots", "mean Dice", "sd", "Dice per structure"], rows)
    for sweep in sweeps:
        if not sweep.get("rows"):
            continue
        last = sweep["rows"][-1]
        pictures = {Path(p).name.split("_", 1)[0]: p for p in last["overlays"]}
        kind = "slice through the volume" if sweep["dims"] == "3d" else "image"
        body += f"<h3>{esc(sweep['label'])}, {last['shots']} shot(s)</h3><div class=\"grid\">" + "".join(
            figure(pictures.get(rank), f"{rank} {kind} by Dice") for rank in ("worst", "median", "best")) + "</div>"
    explanation = ("With only a handful of labelled examples (<i>shots</i>), the labelled regions themselves "
                   "become the prompts: their average features (<i>prototypes</i>) tell SAM2's decoder what to "
                   "look for in a new image, with no click and no retraining of the encoder. The curve shows "
                   "how the score grows with the number of shots. For the 3D volume, the shots are slices of "
                   "one volume and the other volumes are outlined slice by slice." + LEGEND)
    return section("Step 5 — Few-shot segmentation", explanation, body, "fewshot")


def _times_section(results: dict) -> str:
    rows, css = [], []
    for stage in results["stages"]:
        rows.append([text_cell(stage["name"]), number_cell(stage["wall_seconds"], 1), number_cell(stage["cpu_seconds"], 1),
                     number_cell(stage["load_after"], 1), number_cell(stage["quiet_estimate_seconds"], 0)])
        css.append("")
    rows.append([text_cell("total"), number_cell(sum(s["wall_seconds"] for s in results["stages"]), 1),
                 number_cell(sum(s["cpu_seconds"] for s in results["stages"]), 1), '<td class="na"></td>',
                 number_cell(sum(s["quiet_estimate_seconds"] for s in results["stages"]), 0)])
    css.append("total")
    machine = results["machine"]
    body = table(["stage", "wall time (s)", "CPU time (s)", "load average after", "estimate on a quiet machine (s)"],
                 rows, css)
    body += (f"<p>{machine['cpus']} CPU cores, {machine['threads']} torch threads, torch {esc(machine['torch'])}, "
             f"Python {esc(machine['python'])}. Started {esc(results['started'])}.</p>")
    explanation = ("How long each step took. When other programs share the machine (load average above the "
                   "number of cores), wall time grows; CPU time divided by the threads in use estimates the "
                   "time on a machine with nothing else running.")
    return section("Run time", explanation, body, "times")


def _files_section(out: Path, results: dict) -> str:
    files = [("results.json", "every number in this report"), ("splits.json", "which case is in which part")]
    files.append((_rel(out, Path(results["pretrain"]["run"]) / "train.csv"), "MAE loss per step (left curve)"))
    files.append((_rel(out, results["pretrain"]["encoder"]), "pre-trained encoder checkpoint"))
    for label, run in results["finetune"].items():
        files.append((_rel(out, run["curves_csv"]), f"{label}: loss and validation Dice per epoch"))
        files.append((_rel(out, Path(run["run"]) / "model"), f"{label}: fine-tuned model checkpoint"))
        files.append((_rel(out, Path(run["eval"]) / "per_case.csv"), f"{label}: every test case's scores"))
    files.append((_rel(out, Path(results["compare"]["png"]).parent / "compare.json"), "paired comparison"))
    files.append((_rel(out, results["fewshot"]["csv"]), "few-shot Dice per shot count (the plot)"))
    rows = [[f"<td><code>{esc(path)}</code></td>", text_cell(what)] for path, what in files]
    return section("Files behind the figures", "Everything shown here can be recomputed or re-plotted from these "
                   f"files, all inside <code>{esc(out)}</code>.", table(["file", "content"], rows), "files")


def write_report(out: Path, results: dict) -> Path:
    """Draw the figures and write OUT/report.html; returns its path."""
    from samadapt.engine.atomic import atomic_write_text

    out = Path(out)
    figures = out / FIGURE_DIR
    curves = training_curves(Path(results["pretrain"]["run"]),
                             {k: Path(v["run"]) for k, v in results["finetune"].items()}, figures / "training_curves.png")
    shots = shots_plot(results["fewshot"]["sweeps"], figures / "fewshot_dice_vs_shots.png")
    mode = "generated FA phantoms" if results["data"]["mode"] == "phantoms" else f"dataset {results['data']['name']}"
    lead = (f"SAM2 (Hiera-Tiny) adapted to {esc(mode)} with few labels: self-supervised pre-training, fine-tuning "
            f"with learned class prompts, evaluation on held-out cases, and few-shot segmentation. "
            f"Run of {esc(results['started'])}, {results['total_seconds'] / 60:.1f} minutes, {esc(results['budget']['name'])} budget.")
    if results["budget"]["name"] == "quick":
        lead += " <b>Quick smoke run: tiny images and one epoch, so the scores below mean nothing.</b>"
    sections = [_summary_section(results), _data_section(out, results), _pretrain_section(out, results, curves),
                _finetune_section(out, results, curves), _evaluation_section(out, results), _compare_section(out, results),
                _fewshot_section(out, results, shots), _times_section(results), _files_section(out, results)]
    target = out / REPORT_FILE
    atomic_write_text(target, page("samadapt demo report", lead, sections))
    return target
